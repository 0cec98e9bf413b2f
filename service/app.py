"""FastAPI application: POST /index, POST /query, jobs, videos, health, metrics.

The API process never decodes or embeds (unless it runs the in-process queue,
the embedded default without Redis): it streams uploads to the shared data
volume, validates them, and enqueues jobs that workers run on the engine.
"""
from __future__ import annotations

import contextlib
import json
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.decode import probe
from indexer.engine import Engine
from indexer.errors import InputError
from indexer.settings import Settings, get_settings
from service import schemas
from service.jobs import Job, LocalQueue, make_queue, new_job_id
from service.metrics import Metrics
from service.uploads import UploadRejected, save_upload

log = logging.getLogger(__name__)

#: engine error code -> HTTP status, for errors found while validating a request
HTTP_STATUS = {"not_a_video": 415, "no_video_stream": 415, "unsupported_media_type": 415, "truncated": 422,
               "bad_dimensions": 422, "too_long": 422, "too_large": 413, "not_found": 404,
               "incompatible_store": 409}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": schemas.ErrorResponse} for s in (400, 401, 403, 404, 409, 413, 415, 422)
}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    queue = make_queue(settings)
    engine = Engine(settings)
    metrics = Metrics(queue, engine)
    keys = {k.strip() for k in settings.api_keys.split(",") if k.strip()}
    uploads = Path(settings.data) / "uploads"
    local_workers: list[threading.Thread] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.store  # open (and version-check) the store at start-up
        if isinstance(queue, LocalQueue):
            from service.worker import Worker

            for i in range(settings.local_workers):
                worker = Worker(queue, engine, name=f"local-{i}")
                thread = threading.Thread(target=worker.run_forever, name=worker.name, daemon=True)
                thread.start()
                local_workers.append(thread)
                app.state.workers.append(worker)
        yield
        for worker in app.state.workers:
            worker.stop.set()
        engine.save()

    app = FastAPI(title="hapvr", version="0.1.0", lifespan=lifespan,
                  description="Near-duplicate video retrieval with the HAP-VR similarity. Errors are "
                              '`{"error": {"code", "message"}}`.')
    app.state.workers = []
    app.state.queue, app.state.engine, app.state.settings = queue, engine, settings

    # ----- errors: one JSON shape everywhere
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.code, exc.message, headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")

    @app.middleware("http")
    async def _observe(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        metrics.observe(request.method, getattr(route, "path", "unmatched"), response.status_code,
                        time.perf_counter() - start)
        return response

    # ----- auth
    def require_key(authorization: Annotated[str | None, Header()] = None) -> None:
        if not keys:
            return
        if not authorization or not authorization.lower().startswith("bearer "):
            raise ApiError(401, "unauthorized", "missing 'Authorization: Bearer <key>' header")
        given = authorization[7:].strip()
        if not any(secrets.compare_digest(given, k) for k in keys):
            raise ApiError(403, "forbidden", "API key not accepted")

    auth = [Depends(require_key)]

    # ----- helpers
    def validate(path: Path, upload_name: str | None = None) -> None:
        """Header-level checks (no decoding): fail fast with a clear code instead of a failed job.

        A rejected upload is deleted, and its message names the file as the client sent it.
        """
        try:
            probe(path, settings.limits())
        except InputError as exc:
            message = exc.message
            if upload_name is not None:
                path.unlink(missing_ok=True)
                message = message.replace(str(path), upload_name)
            raise ApiError(HTTP_STATUS.get(exc.code, 422), exc.code, message) from None

    def job_ref(job: Job, filename: str | None) -> dict:
        return {"job_id": job.id, "filename": filename, "state": job.state}

    def submit_index(path: Path, sha: str | None, payload: dict) -> Job:
        existing = engine.store.by_sha256(sha) if sha and not payload.get("force") else None
        if existing is not None:  # already indexed: a finished job, nothing to run
            if payload.get("upload"):
                Path(payload["upload"]).unlink(missing_ok=True)
            job = Job(id=new_job_id(), kind="index", payload=payload, state="done", stage="done", progress=100.0,
                      result={"video_id": existing.id, "created": False, "video": existing.public()})
            return queue.submit(job)
        if sha and not payload.get("force"):  # the same file already queued: share its job
            claimed = queue.remember(f"sha:{sha}", {"job_id": new_job_id()}, ttl_s=3600)
            job = queue.get(claimed["job_id"])
            if job is not None and job.state not in ("failed", "cancelled"):
                if payload.get("upload"):
                    Path(payload["upload"]).unlink(missing_ok=True)
                return job
            return queue.submit(Job(id=claimed["job_id"] if job is None else new_job_id(), kind="index",
                                    payload=payload))
        return queue.submit(Job(id=new_job_id(), kind="index", payload=payload))

    # ----- routes
    @app.post("/index", status_code=202, response_model=schemas.IndexAccepted, dependencies=auth, responses=ERRORS,
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["files"], "properties": {
                      "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                      "external_id": {"type": "array", "items": {"type": "string"},
                                      "description": "one per file, in order"},
                      "metadata": {"type": "array", "items": {"type": "string"},
                                   "description": "one JSON object per file, in order"},
                      "force": {"type": "boolean"}}}},
                  "application/json": {"schema": schemas.ImportRequest.model_json_schema()}}}})
    async def index(request: Request, idempotency_key: Annotated[str | None, Header()] = None):
        """Upload videos (multipart) or name server-side files (JSON); one job per video."""
        if idempotency_key:
            previous = queue.recall(f"index:{idempotency_key}")
            if previous is not None:
                return JSONResponse(previous, status_code=202)
        ctype = request.headers.get("content-type", "")
        refs: list[dict] = []
        if ctype.startswith("multipart/form-data"):
            declared = int(request.headers.get("content-length") or 0)
            if declared > settings.max_upload_bytes * 1000:  # hopeless, whatever the file count: refuse unread
                raise ApiError(413, "too_large", f"request of {declared} bytes exceeds the upload limit")
            form = await request.form(max_files=1000, max_fields=3000)
            files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            if not files:
                raise ApiError(400, "missing_field", "multipart field 'files' (one or more video files) is required")
            external_ids = [str(v) for v in form.getlist("external_id")]
            metadatas = [str(v) for v in form.getlist("metadata")]
            for label, values in (("external_id", external_ids), ("metadata", metadatas)):
                if values and len(values) != len(files):
                    raise ApiError(400, "invalid_request", f"give one '{label}' per file or none")
            force = str(form.get("force", "false")).lower() in ("1", "true", "yes")
            parsed_meta = []
            for raw in metadatas:
                try:
                    value = json.loads(raw)
                except json.JSONDecodeError:
                    raise ApiError(400, "invalid_metadata", "each 'metadata' must be a JSON object") from None
                if not isinstance(value, dict):
                    raise ApiError(400, "invalid_metadata", "each 'metadata' must be a JSON object")
                parsed_meta.append(value)
            saved = []
            try:
                for f in files:
                    saved.append(await save_upload(f, uploads, settings.max_upload_bytes))
                for s in saved:
                    await run_in_threadpool(validate, s.path, s.filename)
            except UploadRejected as exc:
                for s in saved:
                    s.path.unlink(missing_ok=True)
                raise ApiError(exc.status, exc.code, exc.message) from None
            except ApiError:
                for s in saved:
                    s.path.unlink(missing_ok=True)
                raise
            for i, s in enumerate(saved):
                payload = {"path": str(s.path), "upload": str(s.path), "filename": s.filename, "force": force,
                           "external_id": external_ids[i] if external_ids else s.filename,
                           "metadata": parsed_meta[i] if parsed_meta else None}
                job = await run_in_threadpool(submit_index, s.path, s.sha256, payload)
                refs.append(job_ref(job, s.filename))
        elif ctype.startswith("application/json"):
            try:
                body = schemas.ImportRequest.model_validate(await request.json())
            except (ValueError, json.JSONDecodeError) as exc:
                raise ApiError(422, "invalid_request", str(exc).splitlines()[0]) from None
            if settings.import_root is None:
                raise ApiError(403, "imports_disabled", "server-side imports are off: set HAPVR_IMPORT_ROOT")
            root = Path(settings.import_root).resolve()
            resolved = []
            for item in body.files:
                target = (root / item.path).resolve()
                if not target.is_relative_to(root):
                    raise ApiError(400, "path_outside_import_root", f"{item.path}: outside the import root")
                if not target.is_file():
                    raise ApiError(404, "not_found", f"{item.path}: no such file under the import root")
                await run_in_threadpool(validate, target)
                resolved.append((item, target))
            for item, target in resolved:
                payload = {"path": str(target), "filename": item.path, "force": body.force,
                           "external_id": item.external_id or item.path, "metadata": item.metadata}
                job = await run_in_threadpool(submit_index, target, None, payload)
                refs.append(job_ref(job, item.path))
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data (uploads) or application/json "
                                                          "(server-side imports)")
        response = {"jobs": refs}
        if idempotency_key:
            response = queue.remember(f"index:{idempotency_key}", response)
        return JSONResponse(response, status_code=202)

    @app.get("/jobs/{job_id}", response_model=schemas.JobOut, dependencies=auth, responses=ERRORS)
    def get_job(job_id: str):
        """State, stage and progress (percent), timings, error code/message, and the result of a job."""
        job = queue.get(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id}")
        return job.__dict__ | {"payload": None}

    @app.delete("/jobs/{job_id}", response_model=schemas.JobOut, dependencies=auth, responses=ERRORS)
    def cancel_job(job_id: str):
        """Cancel a queued job at once, or a running one at its next progress report."""
        job = queue.cancel(job_id)
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id}")
        return job.__dict__

    @app.post("/query", dependencies=auth, response_model=schemas.QueryResult,
              responses={**ERRORS, 202: {"model": schemas.QueryAccepted}},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": {
                      "file": {"type": "string", "format": "binary"}, "top_k": {"type": "integer"},
                      "min_score": {"type": "number"}}}},
                  "application/json": {"schema": schemas.QueryById.model_json_schema()}}}})
    async def query(request: Request, async_: Annotated[bool, Query(alias="async")] = False):
        """Rank indexed videos against an uploaded video (multipart) or an indexed one (JSON `video_id`).

        Answers 200 with the result within HAPVR_QUERY_TIMEOUT_S, else 202 with a job id (also with ?async=true).
        """
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1)
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ApiError(400, "missing_field", "multipart field 'file' (a video) is required")
            top_k = _int_field(form.get("top_k"), "top_k")
            min_score = _float_field(form.get("min_score"), "min_score")
            try:
                saved = await save_upload(upload, uploads, settings.max_upload_bytes)
            except UploadRejected as exc:
                raise ApiError(exc.status, exc.code, exc.message) from None
            await run_in_threadpool(validate, saved.path, saved.filename)
            payload = {"path": str(saved.path), "upload": str(saved.path), "label": saved.filename,
                       "top_k": top_k, "min_score": min_score}
        elif ctype.startswith("application/json"):
            try:
                body = schemas.QueryById.model_validate(await request.json())
            except (ValueError, json.JSONDecodeError) as exc:
                raise ApiError(422, "invalid_request", str(exc).splitlines()[0]) from None
            if engine.store.get(body.video_id) is None:
                raise ApiError(404, "not_found", f"no indexed video with id {body.video_id}")
            payload = {"video_id": body.video_id, "top_k": body.top_k, "min_score": body.min_score}
        else:
            raise ApiError(415, "unsupported_media_type", "send multipart/form-data (a video) or application/json")
        job = queue.submit(Job(id=new_job_id(), kind="query", payload=payload))
        if async_:
            return JSONResponse({"job_id": job.id, "state": job.state}, status_code=202)
        job = await run_in_threadpool(queue.wait, job.id, settings.query_timeout_s)
        if job.state == "done":
            return JSONResponse(job.result)
        if job.state == "failed":
            raise ApiError(HTTP_STATUS.get(job.error_code or "", 422), job.error_code or "failed",
                           job.error_message or "query failed")
        if job.state == "cancelled":
            raise ApiError(409, "cancelled", "the query was cancelled")
        return JSONResponse({"job_id": job.id, "state": job.state}, status_code=202)

    @app.get("/videos", response_model=schemas.VideoPage, dependencies=auth, responses=ERRORS)
    def list_videos(offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                    meta: Annotated[list[str] | None, Query(description="metadata filter key:value, repeatable")] = None):
        """Indexed videos, paginated; `meta=key:value` (repeatable) filters on user metadata."""
        filters = {}
        for item in meta or []:
            if ":" not in item:
                raise ApiError(400, "invalid_filter", f"meta={item!r}: use key:value")
            key, value = item.split(":", 1)
            filters[key] = value
        records = engine.store.list(offset=offset, limit=limit, metadata_filter=filters or None)
        total = engine.store.count() if not filters else len(engine.store.list(0, 10**9, filters))
        return {"videos": [r.public() for r in records], "offset": offset, "limit": limit, "total": total}

    @app.get("/videos/{video_id}", response_model=schemas.Video, dependencies=auth, responses=ERRORS)
    def get_video(video_id: str):
        """One indexed video's record."""
        record = engine.store.get(video_id)
        if record is None:
            raise ApiError(404, "not_found", f"no indexed video with id {video_id}")
        return record.public()

    @app.delete("/videos/{video_id}", status_code=204, dependencies=auth, responses=ERRORS)
    def delete_video(video_id: str):
        """Remove a video from the store, its features and the FAISS index."""
        if not engine.store.delete(video_id):
            raise ApiError(404, "not_found", f"no indexed video with id {video_id}")
        return Response(status_code=204)

    @app.get("/healthz", include_in_schema=True)
    def healthz():
        """The process is up (no dependency checked)."""
        return {"status": "ok"}

    @app.get("/readyz", response_model=schemas.Ready, responses={503: {"model": schemas.Ready}})
    def readyz():
        """Redis reachable, the index opens, at least one live worker."""
        checks: dict[str, bool | int | str] = {"queue": queue.ping()}
        try:
            checks["index_videos"] = engine.store.count()
            checks["index"] = True
        except Exception as exc:  # noqa: BLE001
            checks["index"], checks["index_error"] = False, str(exc)
        try:
            checks["workers"] = queue.workers_alive()
        except Exception:  # noqa: BLE001
            checks["workers"] = 0
        ready = bool(checks["queue"]) and bool(checks["index"]) and int(checks["workers"]) > 0
        return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)

    @app.get("/metrics", include_in_schema=True, dependencies=auth)
    def prometheus():
        """Prometheus text format."""
        body, ctype = metrics.render()
        return Response(body, media_type=ctype)

    return app


def _int_field(value: Any, name: str) -> int | None:
    if value in (None, ""):
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise ApiError(422, "invalid_request", f"{name} must be an integer") from None
    if not 1 <= number <= 1000:
        raise ApiError(422, "invalid_request", f"{name} must be in 1..1000")
    return number


def _float_field(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    try:
        return float(str(value))
    except ValueError:
        raise ApiError(422, "invalid_request", f"{name} must be a number") from None
