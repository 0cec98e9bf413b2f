"""The web UI and the API docs, served by the API process from local files (no CDN, nothing fetched at run
time): `GET /` is the UI's one page (service/ui/), `/docs` is Swagger UI from the files of the
`fastapi-offline` package, and `POST /session` lets the UI's images and players read with a cookie when keys are on.

Every response of the process carries a Content-Security-Policy with no inline script (`SecurityHeaders`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import fastapi_offline
from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from service.context import SESSION_COOKIE, Ctx, authorized, session_token
from service.errors import AUTH_ERRORS

UI = Path(__file__).resolve().parents[1] / "ui"
#: Swagger UI as the fastapi-offline package ships it (only its files are used, not its code)
DOC_ASSETS = Path(fastapi_offline.__file__).resolve().parent / "static"

router = APIRouter()

#: the policy of every page: scripts and styles from this origin only, media and images from it or from
#: the browser's own blobs (a query video played from the user's disk), nothing framed, no plugins
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
#: Swagger UI sets inline styles on its elements (no inline script still)
DOCS_CSP = CSP.replace("style-src 'self'", "style-src 'self' 'unsafe-inline'")


def mount(app) -> None:
    app.mount("/ui/static", StaticFiles(directory=UI / "static"), name="ui-static")
    app.mount("/docs/static", StaticFiles(directory=DOC_ASSETS), name="doc-assets")
    app.include_router(router)


@router.get("/", include_in_schema=False)
def index():
    """The UI's one page; its views are chosen by the URL fragment (#/search, #/library, ...)."""
    return FileResponse(UI / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/docs", include_in_schema=False)
def docs():
    return FileResponse(UI / "docs.html", headers={"Cache-Control": "no-cache"})


@router.get("/ui/config")
def config(ctx: Ctx):
    """What the page must know before it asks for anything: whether it needs a key."""
    return {"keys_required": bool(ctx.keys)}


@router.post("/session", responses=AUTH_ERRORS)
def sign_in(request: Request, ctx: Ctx, _: Annotated[str, Depends(authorized)]):
    """Called by the UI with `Authorization: Bearer <key>`: sets an HttpOnly, SameSite=Strict cookie holding
    a digest of the key, which GET requests (thumbnails, players) may use instead of the header."""
    response = JSONResponse({"session": bool(ctx.keys)})
    header = request.headers.get("authorization", "")
    if ctx.keys and header.lower().startswith("bearer "):
        response.set_cookie(SESSION_COOKIE, session_token(header[7:].strip()), httponly=True, samesite="strict",
                            secure=request.url.scheme == "https", path="/", max_age=12 * 3600)
    return response


@router.delete("/session", status_code=204, responses={204: {"description": "signed out (the cookie is cleared)"}})
def sign_out():
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


class SecurityHeaders:
    """ASGI middleware: the Content-Security-Policy and its companions on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        policy = DOCS_CSP if path.startswith("/docs") else CSP

        async def with_headers(message: dict) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"content-security-policy", policy.encode()),
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"referrer-policy", b"no-referrer"),
                                      (b"x-frame-options", b"DENY")]
            await send(message)

        await self.app(scope, receive, with_headers)
