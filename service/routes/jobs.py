"""GET /jobs (recent jobs and the queue's state), GET /jobs/{id}, DELETE /jobs/{id}: a job's state, and
cancelling it."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service import schemas
from service.context import AUTH, Ctx
from service.errors import ERRORS, ApiError

router = APIRouter()


@router.get("/jobs", response_model=schemas.JobList, dependencies=AUTH, responses=ERRORS)
def list_jobs(ctx: Ctx, limit: Annotated[int, Query(ge=1, le=500)] = 50):
    """The newest jobs first (without their results: fetch one job for that), the queue depth, jobs by
    state and live workers."""
    stats = ctx.queue.stats()
    jobs = [job.__dict__ | {"payload": None, "result": None, "filename": _name(job)}
            for job in ctx.queue.recent(limit)]
    return {"jobs": jobs, "queue_depth": stats["queue_depth"], "jobs_by_state": stats["jobs_by_state"],
            "workers_alive": ctx.queue.workers_alive()}


def _name(job) -> str | None:
    """What the job is about, as the client named it (never a server path)."""
    p = job.payload or {}
    return p.get("filename") or p.get("label") or p.get("video_id")


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
