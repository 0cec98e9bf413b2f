"""GET /jobs/{id}, DELETE /jobs/{id}: a job's state, and cancelling it."""
from __future__ import annotations

from fastapi import APIRouter

from service import schemas
from service.context import AUTH, Ctx
from service.errors import ERRORS, ApiError

router = APIRouter()


@router.get("/jobs/{job_id}", response_model=schemas.JobOut, dependencies=AUTH, responses=ERRORS)
def get_job(job_id: str, ctx: Ctx):
    """State, stage and progress (percent), timings, error code/message, and the result of a job."""
    job = ctx.queue.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job_id: no job {job_id}")
    return job.__dict__ | {"payload": None}


@router.delete("/jobs/{job_id}", response_model=schemas.JobOut, dependencies=AUTH, responses=ERRORS)
def cancel_job(job_id: str, ctx: Ctx):
    """Cancel a queued job at once (its upload is removed), or a running one at its next progress report."""
    job = ctx.queue.cancel(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"job_id: no job {job_id}")
    if job.state == "cancelled":
        ctx.staging.discard(job.payload)
    return job.__dict__ | {"payload": None}
