"""Request limits: a size limit on every request body, and per-client rate limits.

Body limits are enforced as the bytes arrive (an ASGI wrapper around `receive`), so a body over its
route's limit is refused without being read whole, and one that *declares* a larger Content-Length is
answered 413 before a byte of it is read (a client that never sends the body it announced gets its answer
instead of a hang).

Rate limits are token buckets, one per API key (or per client address when keys are off): `rate` requests
a second on average, `burst` at once. The buckets live where the job queue lives (Redis, so that every API
process shares them; in memory for the embedded queue), see `service.jobs`.
"""
from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class BodyTooLarge(Exception):
    """A request body past its route's limit (HTTP 413)."""


def body_limit(settings) -> Callable[[Scope], int]:
    """The largest body each kind of request may send, from the settings."""

    def limit(scope: Scope) -> int:
        path, method = scope.get("path", ""), scope.get("method", "GET")
        ctype = _header(scope, b"content-type")
        if method == "POST" and ctype.startswith("multipart/form-data"):
            if path == "/index":
                return settings.max_request_bytes
            if path == "/query":
                return settings.max_upload_bytes + 1024 * 1024  # one file plus its form fields
        if method in ("POST", "PUT", "PATCH"):
            return settings.max_json_bytes
        return 64 * 1024  # GET, DELETE: no body expected

    return limit


def _header(scope: Scope, name: bytes) -> str:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return ""


class BodyLimit:
    """ASGI middleware: refuse bodies over `limit_for(scope)` bytes with 413 and the one error shape."""

    def __init__(self, app, limit_for: Callable[[Scope], int]):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _header(scope, b"content-length")
        if declared:
            try:
                size = int(declared)
            except ValueError:
                await _reply(send, 400, "invalid_request", "Content-Length is not a number")
                return
            if size > limit:
                await _reply(send, 413, "too_large", f"request body of {size} bytes exceeds this route's limit "
                                                      f"of {limit} bytes")
                return
        received = 0

        async def limited() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(f"request body exceeds this route's limit of {limit} bytes")
            return message

        await self.app(scope, limited, send)


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class TokenBuckets:
    """In-process token buckets (the embedded queue's; `RedisQueue.take_token` is the shared one)."""

    def __init__(self) -> None:
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, who: str, rate: float, burst: int) -> float:
        """Spend one token of `who`'s bucket: 0 when allowed, else the seconds until one is back."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(who, (float(burst), now))
            tokens = min(float(burst), tokens + (now - last) * rate)
            if tokens >= 1:
                self._buckets[who] = (tokens - 1, now)
                return 0.0
            self._buckets[who] = (tokens, now)
            if len(self._buckets) > 100_000:  # forget idle clients rather than grow without bound
                self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < burst / rate}
            return (1 - tokens) / rate


def retry_after(wait_s: float) -> str:
    """The Retry-After header: whole seconds, at least 1."""
    return str(max(1, math.ceil(wait_s)))
