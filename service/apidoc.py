"""Render docs/API.md from the app's OpenAPI schema: `python -m service.apidoc` (a test checks it is current)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "API.md"


def render(schema: dict) -> str:
    out = ["# HTTP API", "",
           "Generated from the OpenAPI schema by `python -m service.apidoc`; the live schema is served at "
           "`/openapi.json` and browsable at `/docs`. Errors always have the shape "
           '`{"error": {"code": "...", "message": "..."}}`. When `HAPVR_API_KEYS` is set, every route except '
           "`/healthz` and `/readyz` needs `Authorization: Bearer <key>` (401 without, 403 with a wrong key).", ""]
    for path, ops in schema["paths"].items():
        for method, op in ops.items():
            out.append(f"## `{method.upper()} {path}`")
            out.append("")
            if op.get("description") or op.get("summary"):
                out.append((op.get("description") or op.get("summary")).strip())
                out.append("")
            params = op.get("parameters", [])
            if params:
                out.append("| parameter | in | type | required |")
                out.append("|---|---|---|---|")
                for p in params:
                    t = p.get("schema", {}).get("type") or "/".join(
                        s.get("type", "?") for s in p.get("schema", {}).get("anyOf", []))
                    out.append(f"| `{p['name']}` | {p['in']} | {t} | {p.get('required', False)} |")
                out.append("")
            body = op.get("requestBody", {}).get("content", {})
            for ctype, spec in body.items():
                props = spec.get("schema", {}).get("properties", {})
                if "$ref" in spec.get("schema", {}):
                    props = {"(schema)": {"type": spec["schema"]["$ref"].split("/")[-1]}}
                fields = ", ".join(f"`{k}`" for k in props)
                out.append(f"Body `{ctype}`: {fields}")
            if body:
                out.append("")
            codes = ", ".join(f"{code} ({r.get('description', '')})" for code, r in op.get("responses", {}).items())
            out.append(f"Responses: {codes}")
            out.append("")
    out.append("## Schemas")
    out.append("")
    out.append("```json")
    out.append(json.dumps(schema.get("components", {}).get("schemas", {}), indent=1, sort_keys=True))
    out.append("```")
    return "\n".join(out) + "\n"


def current() -> str:
    from config.settings import Settings
    from service.app import create_app

    return render(create_app(Settings(data=Path("/tmp/hapvr-apidoc"))).openapi())


def main() -> None:
    DOC.write_text(current())
    print(f"wrote {DOC}", file=sys.stderr)


if __name__ == "__main__":
    main()
