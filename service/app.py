"""The FastAPI application: one router per resource (service/routes/), one error table (service/errors.py),
limits on every request body and per-client rate limits (service/limits.py).

The API process never decodes or embeds (unless it runs the in-process queue, the embedded default
without Redis): it streams uploads to the data volume, validates them, and enqueues jobs that workers run
on the engine. Routes reach stored data only through the engine (`indexer.engine.Engine`).
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time

from fastapi import FastAPI

from indexer.engine import Engine
from config.settings import Settings, get_settings
from service import errors
from service.context import Context
from service.jobs import LocalQueue, make_queue
from service.limits import BodyLimit, body_limit
from service.metrics import Metrics
from service.routes import duplicates, health, index, jobs, query, ui, videos
from service.staging import make_staging
from service.uploads import sweep_partial

log = logging.getLogger(__name__)

#: seconds between sweeps of partial uploads left by API processes that died mid-upload
SWEEP_EVERY_S = 60.0


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    queue = make_queue(settings)
    engine = Engine(settings)
    keys = frozenset(k.strip() for k in settings.api_keys.split(",") if k.strip())
    staging = make_staging(settings)
    ctx = Context(settings=settings, queue=queue, engine=engine, metrics=Metrics(queue, engine), keys=keys,
                  staging=staging)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.open()  # open (and version-check) the store at start-up, not at the first request
        sweep_partial(ctx.uploads)
        stop = threading.Event()
        sweeper = threading.Thread(target=_sweep_forever, args=(ctx, stop), name="upload-sweeper", daemon=True)
        sweeper.start()
        if isinstance(queue, LocalQueue):
            from service.worker import Worker

            for i in range(settings.local_workers):
                worker = Worker(queue, engine, name=f"local-{i}", staging=staging)
                threading.Thread(target=worker.run_forever, name=worker.name, daemon=True).start()
                app.state.workers.append(worker)
        yield
        stop.set()
        for worker in app.state.workers:
            worker.stop.set()
        engine.save()

    # /docs is served from local files by service/routes/ui.py (FastAPI's own pages load a CDN)
    app = FastAPI(title="hapvr", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Near-duplicate video retrieval with the HAP-VR similarity. Errors are "
                              '`{"error": {"code", "message"}}`.')
    app.state.workers = []
    app.state.ctx = ctx
    app.state.queue, app.state.engine, app.state.settings = queue, engine, settings
    errors.install(app)

    app.add_middleware(BodyLimit, limit_for=body_limit(settings))
    app.add_middleware(ui.SecurityHeaders)
    app.add_middleware(Observe, metrics=ctx.metrics)  # outermost: it also counts what BodyLimit refuses
    for router in (index.router, query.router, jobs.router, videos.router, duplicates.router, health.router):
        app.include_router(router)
    ui.mount(app)
    return app


def _sweep_forever(ctx: Context, stop: threading.Event) -> None:
    while not stop.wait(SWEEP_EVERY_S):
        try:
            sweep_partial(ctx.uploads)
        except OSError as exc:
            log.warning("sweeping partial uploads failed: %s", exc)


class Observe:
    """ASGI middleware: a latency observation per request, by method, route template and status (plain ASGI,
    not BaseHTTPMiddleware, so that errors raised while a body streams reach the app's error handlers)."""

    def __init__(self, app, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), [500]

        async def observed(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope.get("method", ""), getattr(route, "path", "unmatched"), status[0],
                                 time.perf_counter() - start)
