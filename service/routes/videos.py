"""GET /videos, GET /videos/{id}, DELETE /videos/{id}: the indexed collection."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from service import schemas
from service.context import AUTH, Ctx
from service.errors import ERRORS, ApiError

router = APIRouter()


@router.get("/videos", response_model=schemas.VideoPage, dependencies=AUTH, responses=ERRORS)
def list_videos(ctx: Ctx, offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                meta: Annotated[list[str] | None, Query(description="metadata filter key:value, repeatable",
                                                        max_length=50)] = None):
    """Indexed videos, paginated; `meta=key:value` (repeatable) filters on user metadata."""
    filters = {}
    for item in meta or []:
        if ":" not in item:
            raise ApiError(400, "invalid_filter", f"meta: {item!r} is not key:value")
        key, value = item.split(":", 1)
        filters[key] = value
    records, total = ctx.engine.videos(offset=offset, limit=limit, metadata_filter=filters or None)
    return {"videos": [r.public() for r in records], "offset": offset, "limit": limit, "total": total}


@router.get("/videos/{video_id}", response_model=schemas.Video, dependencies=AUTH, responses=ERRORS)
def get_video(video_id: str, ctx: Ctx):
    """One indexed video's record."""
    record = ctx.engine.video(video_id)
    if record is None:
        raise ApiError(404, "not_found", f"video_id: no indexed video with id {video_id}")
    return record.public()


@router.delete("/videos/{video_id}", status_code=204, dependencies=AUTH, responses=ERRORS)
def delete_video(video_id: str, ctx: Ctx):
    """Remove a video from the store, its features and the FAISS index."""
    record = ctx.engine.video(video_id)
    if record is None or not ctx.engine.delete(video_id):
        raise ApiError(404, "not_found", f"video_id: no indexed video with id {video_id}")
    ctx.queue.forget(f"sha:{record.sha256}")  # a new upload of the same file is indexed again
    return Response(status_code=204)
