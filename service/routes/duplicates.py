"""POST /duplicates, GET /duplicates: the whole collection grouped into duplicate sets (indexer/duplicates.py)."""
from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from service import schemas
from service.bodies import body_schema, read_json
from service.context import AUTH, Ctx
from service.errors import ERRORS, ApiError
from service.jobs import Job, new_job_id

router = APIRouter()


@router.post("/duplicates", dependencies=AUTH, status_code=202, response_model=schemas.QueryAccepted,
             responses=ERRORS, openapi_extra={"requestBody": {"required": False, "content": {
                 "application/json": {"schema": body_schema(schemas.DuplicatesRequest)}}}})
async def start_duplicates(request: Request, ctx: Ctx):
    """Start grouping the collection into duplicate sets: a job (GET /jobs/{id} for its progress); its
    result is then served by GET /duplicates. Videos scanned by an earlier job are not scanned again."""
    body = schemas.DuplicatesRequest()
    if request.headers.get("content-length", "0") != "0" or request.headers.get("transfer-encoding"):
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ApiError(415, "unsupported_media_type", "send application/json (or no body)")
        body = await read_json(request, schemas.DuplicatesRequest)
    job = ctx.queue.submit(Job(id=new_job_id(), kind="duplicates", payload={"min_confidence": body.min_confidence}))
    return JSONResponse({"job_id": job.id, "state": job.state}, status_code=202)


@router.get("/duplicates", dependencies=AUTH, response_model=schemas.Duplicates, responses=ERRORS)
async def get_duplicates(ctx: Ctx):
    """The duplicate sets of the last finished grouping job (POST /duplicates starts one)."""
    result = await run_in_threadpool(ctx.engine.last_duplicates)
    if result is None:
        raise ApiError(404, "not_found", "no duplicates job has finished yet: POST /duplicates starts one")
    return result
