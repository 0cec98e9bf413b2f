"""GET /healthz, /readyz (no key needed) and /metrics."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from service import schemas
from service.context import AUTH, Ctx
from service.errors import AUTH_ERRORS

router = APIRouter()


@router.get("/healthz")
def healthz():
    """The process is up (no dependency checked)."""
    return {"status": "ok"}


@router.get("/readyz", response_model=schemas.Ready, responses={503: {"model": schemas.Ready}})
def readyz(ctx: Ctx):
    """Redis reachable, the index opens, at least one live worker."""
    checks: dict[str, bool | int | str] = {"queue": ctx.queue.ping()}
    try:
        checks["index_videos"] = ctx.engine.video_count()
        checks["index"] = True
    except Exception as exc:  # noqa: BLE001 - readiness reports it
        checks["index"], checks["index_error"] = False, str(exc)
    try:
        checks["workers"] = ctx.queue.workers_alive()
    except Exception:  # noqa: BLE001
        checks["workers"] = 0
    ready = bool(checks["queue"]) and bool(checks["index"]) and int(checks["workers"]) > 0
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)


@router.get("/metrics", dependencies=AUTH, response_class=Response,
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **AUTH_ERRORS})
def prometheus(ctx: Ctx):
    """Prometheus text format."""
    body, ctype = ctx.metrics.render()
    return Response(body, media_type=ctype)
