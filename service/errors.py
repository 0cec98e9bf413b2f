"""The API's one error table and its handlers: every error is `{"error": {"code", "message"}}`.

An engine error code (indexer.errors.InputError) maps to one HTTP status here, whichever route meets it;
framework errors (validation, unknown routes, bodies over their limit, clients that hang up) get the same
JSON shape, with a message that names the field at fault.
"""
from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from service import schemas
from service.limits import BodyTooLarge

log = logging.getLogger(__name__)

#: engine error code -> HTTP status
HTTP_STATUS = {"not_a_video": 415, "no_video_stream": 415, "unsupported_media_type": 415, "truncated": 422,
               "bad_dimensions": 422, "too_long": 422, "too_large": 413, "not_found": 404,
               "incompatible_store": 409, "storage_full": 507}

#: the error responses every authenticated route documents in the OpenAPI schema
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": schemas.ErrorResponse} for s in (400, 401, 403, 404, 409, 413, 415, 422, 429, 507)
}
#: what any keyed route can answer before it runs (a missing or wrong key, the key's rate limit)
AUTH_ERRORS = {s: ERRORS[s] for s in (401, 403, 429)}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers


def from_input_error(code: str, message: str) -> ApiError:
    return ApiError(HTTP_STATUS.get(code, 422), code, message)


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


def validation_message(errors: list[dict], prefix: str = "") -> str:
    """The first pydantic error as `where: what`, e.g. `files.0.path: Field required`."""
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or prefix or "body"
    if prefix and where != prefix:
        where = f"{prefix}.{where}"
    return f"{where}: {first.get('msg', 'invalid value')}"


def invalid_body(exc: ValidationError) -> ApiError:
    return ApiError(422, "invalid_request", validation_message(exc.errors(include_url=False)))


def install(app: FastAPI) -> None:
    """Register the handlers that turn every failure into the one JSON shape."""

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        headers = dict(exc.headers or {})
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return error_response(exc.status, exc.code, exc.message, headers or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        return error_response(422, "invalid_request", validation_message(list(exc.errors())))

    @app.exception_handler(BodyTooLarge)
    async def _too_large(_: Request, exc: BodyTooLarge):
        return error_response(413, "too_large", str(exc))

    @app.exception_handler(ClientDisconnect)
    async def _gone(request: Request, _: ClientDisconnect):
        # the client hung up mid-request: nothing to answer and nothing broken (its upload was removed)
        log.info("client disconnected during %s %s", request.method, request.url.path)
        return Response(status_code=400)
