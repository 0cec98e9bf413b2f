"""Reading request bodies into their schemas, with errors that name the field at fault."""
from __future__ import annotations

from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.errors import ApiError, invalid_body

Model = TypeVar("Model", bound=BaseModel)


async def read_json(request: Request, model: type[Model]) -> Model:
    """The body as `model` (its size is already bounded by service.limits.BodyLimit)."""
    raw = await request.body()
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            raise ApiError(422, "invalid_request", "body: not valid JSON") from None
        raise invalid_body(exc) from None


def int_field(value: Any, name: str, low: int = 1, high: int = 1000) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise ApiError(422, "invalid_request", f"{name}: must be an integer") from None
    if not low <= number <= high:
        raise ApiError(422, "invalid_request", f"{name}: must be in {low}..{high}")
    return number


def float_field(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        number = float(str(value))
    except ValueError:
        raise ApiError(422, "invalid_request", f"{name}: must be a number") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise ApiError(422, "invalid_request", f"{name}: must be a finite number")
    return number


def body_schema(model: type[BaseModel]) -> dict[str, Any]:
    """`model`'s JSON schema for an OpenAPI request body, with its nested models written in place: pydantic
    refers to them as `#/$defs/...`, which is no place in an OpenAPI document (ReDoc refuses it)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.split("/")[-1]])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)
