"""What every route shares: the process's engine, queue, settings and metrics, and the dependencies that
authenticate and rate-limit a request. Routers reach them only through `Ctx`, never through globals."""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, Request

from indexer.engine import Engine
from config.settings import Settings
from service.errors import ApiError
from service.limits import retry_after


@dataclass
class Context:
    settings: Settings
    queue: object  # service.jobs.RedisQueue | LocalQueue
    engine: Engine
    metrics: object  # service.metrics.Metrics
    keys: frozenset[str]
    staging: object  # service.staging.Staging: where uploads wait for a worker

    @property
    def uploads(self) -> Path:
        return Path(self.settings.data) / "uploads"


def context(request: Request) -> Context:
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(context)]


#: the web UI's session cookie (service/routes/ui.py): a digest of the key, never the key
SESSION_COOKIE = "hapvr_session"
#: methods a session cookie may authorise: reads only, so a forged cross-site request can change nothing
SAFE_METHODS = frozenset({"GET", "HEAD"})


def session_token(key: str) -> str:
    """What the session cookie holds for `key`: a digest (a leaked cookie never reveals the key itself)."""
    return hashlib.sha256(f"hapvr-ui-session:{key}".encode()).hexdigest()


def authorized(request: Request, ctx: Ctx, authorization: Annotated[str | None, Header()] = None) -> str:
    """Check the API key (when keys are on) and spend one request of the client's rate limit; returns who the
    client is for the limit: a digest of its key (the key itself is never stored), else its address.

    The key comes in `Authorization: Bearer <key>`. A GET or HEAD may instead carry the web UI's session
    cookie (an image or a video player cannot send headers); a state-changing request never can, so a
    cross-site form or script riding on the cookie is refused (no CSRF)."""
    who = f"ip:{request.client.host if request.client else 'unknown'}"
    if ctx.keys:
        cookie = request.cookies.get(SESSION_COOKIE)
        if authorization and authorization.lower().startswith("bearer "):
            given = authorization[7:].strip()
            if not any(secrets.compare_digest(given, k) for k in ctx.keys):
                raise ApiError(403, "forbidden", "API key not accepted")
            who = "key:" + hashlib.sha256(given.encode()).hexdigest()[:16]
        elif cookie and request.method in SAFE_METHODS:
            if not any(secrets.compare_digest(cookie, session_token(k)) for k in ctx.keys):
                raise ApiError(403, "forbidden", "session not accepted: sign in again")
            who = "key:" + cookie[:16]
        else:
            raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <key>' header")
    settings = ctx.settings
    if settings.rate_limit > 0:
        wait = ctx.queue.take_token(who, settings.rate_limit, settings.rate_burst)
        if wait > 0:
            raise ApiError(429, "rate_limited", f"more than {settings.rate_limit:g} requests a second "
                           f"(burst {settings.rate_burst}); retry in {wait:.1f} s",
                           headers={"Retry-After": retry_after(wait)})
    return who


#: the dependencies of every route that needs a key
AUTH = [Depends(authorized)]
