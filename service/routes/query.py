"""POST /query: rank indexed videos against an uploaded video or an indexed one."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile

from service import schemas
from service.bodies import body_schema, float_field, int_field, read_json
from service.context import AUTH, Ctx
from service.errors import ERRORS, HTTP_STATUS, ApiError
from service.jobs import Job, new_job_id
from service.routes.intake import validate
from service.uploads import UploadRejected, save_upload

router = APIRouter()

MULTIPART = {"type": "object", "required": ["file"], "properties": {
    "file": {"type": "string", "format": "binary"}, "top_k": {"type": "integer", "minimum": 1, "maximum": 1000},
    "min_score": {"type": "number"}, "min_confidence": {"type": "number", "minimum": 0, "maximum": 1},
    "matrices": {"type": "boolean", "description": "add each result's frame-to-frame matrix"}}}


@router.post("/query", dependencies=AUTH, response_model=schemas.QueryResult,
             responses={**ERRORS, 202: {"model": schemas.QueryAccepted}},
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": MULTIPART},
                 "application/json": {"schema": body_schema(schemas.QueryById)}}}})
async def query(request: Request, ctx: Ctx, async_: Annotated[bool, Query(alias="async")] = False):
    """Rank indexed videos against an uploaded video (multipart) or an indexed one (JSON `video_id`).

    Answers 200 with the result within HAPVR_QUERY_TIMEOUT_S, else 202 with a job id (also with ?async=true).
    """
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        form = await request.form(max_files=1)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "missing_field", "file: a video is required (multipart field 'file')")
        top_k = int_field(form.get("top_k"), "top_k")
        min_score = float_field(form.get("min_score"), "min_score")
        min_confidence = float_field(form.get("min_confidence"), "min_confidence")
        if min_confidence is not None and not 0.0 <= min_confidence <= 1.0:
            raise ApiError(422, "invalid_request", "min_confidence: must be in 0..1")
        try:
            saved = await save_upload(upload, ctx.uploads, ctx.settings.max_upload_bytes)
        except UploadRejected as exc:
            raise ApiError(exc.status, exc.code, exc.message) from None
        await run_in_threadpool(validate, ctx, saved.path, saved.filename)
        ref = await run_in_threadpool(ctx.staging.publish, saved.path)
        matrices = str(form.get("matrices", "false")).lower() in ("1", "true", "yes")
        payload = {"path": ref, "upload": ref, "label": saved.filename, "matrices": matrices,
                   "top_k": top_k, "min_score": min_score, "min_confidence": min_confidence}
    elif ctype.startswith("application/json"):
        body = await read_json(request, schemas.QueryById)
        if ctx.engine.video(body.video_id) is None:
            raise ApiError(404, "not_found", f"video_id: no indexed video with id {body.video_id}")
        payload = {"video_id": body.video_id, "top_k": body.top_k, "min_score": body.min_score,
                   "min_confidence": body.min_confidence, "matrices": body.matrices}
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data (a video) or application/json")
    queue = ctx.queue
    job = queue.submit(Job(id=new_job_id(), kind="query", payload=payload))
    if async_:
        return JSONResponse({"job_id": job.id, "state": job.state}, status_code=202)
    job = await run_in_threadpool(queue.wait, job.id, ctx.settings.query_timeout_s)
    if job.state == "done":
        return JSONResponse(job.result)
    if job.state == "failed":
        raise ApiError(HTTP_STATUS.get(job.error_code or "", 422), job.error_code or "failed",
                       job.error_message or "query failed")
    if job.state == "cancelled":
        raise ApiError(409, "cancelled", "the query was cancelled")
    return JSONResponse({"job_id": job.id, "state": job.state}, status_code=202)
