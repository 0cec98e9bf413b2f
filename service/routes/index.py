"""POST /index: upload videos (multipart) or name server-side files (JSON); one job per video."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from service import schemas
from service.bodies import body_schema, read_json
from service.context import AUTH, Context, Ctx
from service.errors import ERRORS, ApiError
from service.jobs import Job, new_job_id
from service.routes.intake import validate
from service.uploads import UploadRejected, save_upload

router = APIRouter()

MULTIPART = {"type": "object", "required": ["files"], "properties": {
    "files": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}},
    "external_id": {"type": "array", "items": {"type": "string"}, "description": "one per file, in order"},
    "metadata": {"type": "array", "items": {"type": "string"}, "description": "one JSON object per file, in order"},
    "force": {"type": "boolean"}}}


def _done(payload: dict, video) -> Job:
    return Job(id=new_job_id(), kind="index", payload=payload, state="done", stage="done", progress=100.0,
               result={"video_id": video.id, "created": False, "video": video.public()})


def submit_index(ctx: Context, sha: str | None, payload: dict) -> Job:
    """Queue an index job, unless the file is indexed already (a finished job says so) or the same file is
    being indexed by another job (that job is shared)."""
    queue, engine = ctx.queue, ctx.engine

    def queued(job_id: str) -> Job:  # the upload goes where any worker can read it only when a job will run
        ready = dict(payload)
        if payload.get("upload"):
            ready["path"] = ready["upload"] = ctx.staging.publish(Path(payload["upload"]))
        return queue.submit(Job(id=job_id, kind="index", payload=ready))

    if sha and not payload.get("force"):
        existing = engine.video_by_sha256(sha)
        if existing is not None:  # already indexed: a finished job, nothing to run
            ctx.staging.discard(payload)
            return queue.submit(_done(payload, existing))
        memo = f"sha:{sha}"
        claimed = queue.remember(memo, {"job_id": new_job_id()}, ttl_s=3600)
        job = queue.get(claimed["job_id"])
        if job is None:  # ours: the first upload of this file
            return queued(claimed["job_id"])
        live = job.state in ("queued", "running")
        # a done job whose video was deleted since, or a failed or cancelled one, is no answer for a new upload
        if live or (job.state == "done" and engine.video(job.result["video_id"]) is not None):
            ctx.staging.discard(payload)
            return job
        queue.forget(memo)
        fresh = queued(new_job_id())
        queue.remember(memo, {"job_id": fresh.id}, ttl_s=3600)
        return fresh
    return queued(new_job_id())


def _ref(job: Job, filename: str | None) -> dict:
    return {"job_id": job.id, "filename": filename, "state": job.state}


async def _uploads(ctx: Context, request: Request) -> list[dict]:
    form = await request.form(max_files=1000, max_fields=3000)
    files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
    if not files:
        raise ApiError(400, "missing_field", "files: one or more video files are required (multipart field 'files')")
    external_ids = [str(v) for v in form.getlist("external_id")]
    metadatas = [str(v) for v in form.getlist("metadata")]
    for label, values in (("external_id", external_ids), ("metadata", metadatas)):
        if values and len(values) != len(files):
            raise ApiError(400, "invalid_request", f"{label}: give one per file or none")
    force = str(form.get("force", "false")).lower() in ("1", "true", "yes")
    parsed_meta = []
    for i, raw in enumerate(metadatas):
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = None
        if not isinstance(value, dict):
            raise ApiError(400, "invalid_metadata", f"metadata.{i}: must be a JSON object")
        parsed_meta.append(value)
    saved = []
    try:
        for f in files:
            saved.append(await save_upload(f, ctx.uploads, ctx.settings.max_upload_bytes))
        for s in saved:
            await run_in_threadpool(validate, ctx, s.path, s.filename)
    except BaseException as exc:  # a rejected file, a client gone mid-body: none of this request's files stay
        for s in saved:
            s.path.unlink(missing_ok=True)
        if isinstance(exc, UploadRejected):
            raise ApiError(exc.status, exc.code, exc.message) from None
        raise
    refs = []
    for i, s in enumerate(saved):
        payload = {"path": str(s.path), "upload": str(s.path), "filename": s.filename, "force": force,
                   "external_id": external_ids[i] if external_ids else s.filename,
                   "metadata": parsed_meta[i] if parsed_meta else None}
        refs.append(_ref(await run_in_threadpool(submit_index, ctx, s.sha256, payload), s.filename))
    return refs


async def _imports(ctx: Context, request: Request) -> list[dict]:
    body = await read_json(request, schemas.ImportRequest)
    if ctx.settings.import_root is None:
        raise ApiError(403, "imports_disabled", "server-side imports are off: set HAPVR_IMPORT_ROOT")
    root = Path(ctx.settings.import_root).resolve()
    resolved = []
    for i, item in enumerate(body.files):
        target = (root / item.path).resolve()
        if not target.is_relative_to(root):
            raise ApiError(400, "path_outside_import_root", f"files.{i}.path: {item.path} is outside the import root")
        if not target.is_file():
            raise ApiError(404, "not_found", f"files.{i}.path: no file {item.path} under the import root")
        await run_in_threadpool(validate, ctx, target)
        resolved.append((item, target))
    refs = []
    for item, target in resolved:
        payload = {"path": str(target), "filename": item.path, "force": body.force,
                   "external_id": item.external_id or item.path, "metadata": item.metadata}
        refs.append(_ref(await run_in_threadpool(submit_index, ctx, None, payload), item.path))
    return refs


@router.post("/index", status_code=202, response_model=schemas.IndexAccepted, dependencies=AUTH, responses=ERRORS,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": MULTIPART},
                 "application/json": {"schema": body_schema(schemas.ImportRequest)}}}})
async def index(request: Request, ctx: Ctx, idempotency_key: Annotated[str | None, Header(max_length=200)] = None):
    """Upload videos (multipart) or name server-side files (JSON); one job per video.

    A file already indexed (same sha256) gets a finished job naming its video; the same file uploaded
    while its first job runs shares that job; a repeated `Idempotency-Key` replays the first answer.
    """
    if idempotency_key:
        previous = ctx.queue.recall(f"index:{idempotency_key}")
        if previous is not None:
            return JSONResponse(previous, status_code=202)
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        refs = await _uploads(ctx, request)
    elif ctype.startswith("application/json"):
        refs = await _imports(ctx, request)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data (uploads) or application/json "
                                                      "(server-side imports)")
    response = {"jobs": refs}
    if idempotency_key:
        response = ctx.queue.remember(f"index:{idempotency_key}", response)
    return JSONResponse(response, status_code=202)
