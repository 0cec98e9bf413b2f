"""GET /videos, GET /videos/{id}, DELETE /videos/{id}: the indexed collection; a video's thumbnail, key
frames and kept source file (HTTP Range), and an indexed pair's evidence (GET /videos/{id}/compare/{other})."""
from __future__ import annotations

import mimetypes
import re
from typing import Annotated

from fastapi import APIRouter, Header, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response, StreamingResponse

from indexer.errors import InputError
from service import schemas
from service.context import AUTH, Ctx
from service.errors import ERRORS, ApiError, from_input_error

router = APIRouter()


@router.get("/videos", response_model=schemas.VideoPage, dependencies=AUTH, responses=ERRORS)
def list_videos(ctx: Ctx, offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                meta: Annotated[list[str] | None, Query(description="metadata filter key:value, repeatable",
                                                        max_length=50)] = None,
                q: Annotated[str | None, Query(max_length=200, description="substring of the source name")] = None):
    """Indexed videos, paginated; `meta=key:value` (repeatable) filters on user metadata, `q` on the name."""
    filters = {}
    for item in meta or []:
        if ":" not in item:
            raise ApiError(400, "invalid_filter", f"meta: {item!r} is not key:value")
        key, value = item.split(":", 1)
        filters[key] = value
    records, total = ctx.engine.videos(offset=offset, limit=limit, metadata_filter=filters or None, name=q or None)
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
    """Remove a video: its row, features, key frames, kept source and its vectors in the coarse index."""
    record = ctx.engine.video(video_id)
    if record is None or not ctx.engine.delete(video_id):
        raise ApiError(404, "not_found", f"video_id: no indexed video with id {video_id}")
    ctx.queue.forget(f"sha:{record.sha256}")  # a new upload of the same file is indexed again
    return Response(status_code=204)


JPEG = {200: {"content": {"image/jpeg": {"schema": {"type": "string", "format": "binary"}}}}}
#: the most bytes one ranged read from an object store answers with (a player asks again for the rest)
MAX_RANGE_BYTES = 4 << 20
#: a key frame or thumbnail never changes for a video id
IMMUTABLE = {"Cache-Control": "private, max-age=86400, immutable"}


def _keyframes(ctx, video_id: str):
    if ctx.engine.video(video_id) is None:
        raise ApiError(404, "not_found", f"video_id: no indexed video with id {video_id}")
    frames = ctx.engine.keyframes(video_id)
    if frames is None or not frames.times:
        raise ApiError(404, "no_keyframes", f"video_id: video {video_id} has no key frames (indexed with "
                       "HAPVR_KEYFRAMES=0, or before key frames were kept)")
    return frames


@router.get("/videos/{video_id}/thumbnail", dependencies=AUTH, response_class=Response,
            responses={**JPEG, **ERRORS})
def thumbnail(video_id: str, ctx: Ctx):
    """A JPEG key frame that stands for the video (the informative one nearest its middle)."""
    return Response(_keyframes(ctx, video_id).thumbnail(), media_type="image/jpeg", headers=IMMUTABLE)


@router.get("/videos/{video_id}/keyframes", response_model=schemas.KeyframeList, dependencies=AUTH,
            responses=ERRORS)
def keyframes(video_id: str, ctx: Ctx):
    """The times of the video's stored key frames (fetch each with GET /videos/{id}/frames?t=)."""
    frames = _keyframes(ctx, video_id)
    return {"times": frames.times, "width": frames.width, "height": frames.height}


@router.get("/videos/{video_id}/frames", dependencies=AUTH, response_class=Response, responses={**JPEG, **ERRORS})
def frame(video_id: str, ctx: Ctx, t: Annotated[float, Query(ge=0, le=1e7, description="seconds")] = 0.0):
    """The stored key frame nearest `t` seconds, as JPEG; its time is in the X-Frame-Time header."""
    frames = _keyframes(ctx, video_id)
    i = frames.nearest(t)
    return Response(frames.jpeg(i), media_type="image/jpeg",
                    headers={**IMMUTABLE, "X-Frame-Time": str(frames.times[i])})


RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


@router.get("/videos/{video_id}/media", dependencies=AUTH, response_class=Response,
            responses={200: {"content": {"video/*": {}}}, 206: {"description": "a byte range"},
                       416: {"description": "range not satisfiable"}, **ERRORS})
async def media(video_id: str, ctx: Ctx, range_: Annotated[str | None, Header(alias="range")] = None):
    """The video's kept source file (uploads, with HAPVR_KEEP_UPLOADS), with HTTP Range requests for players."""
    record = ctx.engine.video(video_id)
    if record is None:
        raise ApiError(404, "not_found", f"video_id: no indexed video with id {video_id}")
    size = await run_in_threadpool(ctx.engine.source_size, video_id)
    if size is None:
        raise ApiError(404, "source_not_kept", f"video_id: the source file of {video_id} is not kept (an import, "
                       "or HAPVR_KEEP_UPLOADS=false): its key frames are at /videos/{id}/frames")
    ctype = mimetypes.guess_type(record.source)[0] or "video/mp4"
    if not ctype.startswith("video/"):
        ctype = "video/mp4"
    path = ctx.engine.source_path(video_id)
    if path is not None:  # on this disk: Starlette answers Range, If-Range and HEAD itself
        return FileResponse(path, media_type=ctype, headers={"Cache-Control": "private, max-age=3600"})
    start, end = 0, size  # an object store: one bounded ranged read per request
    if range_:
        match = RANGE.match(range_.strip())
        if not match or (not match.group(1) and not match.group(2)):
            raise ApiError(400, "invalid_range", f"range: {range_!r} is not one 'bytes=start-end' range")
        if match.group(1):
            start = int(match.group(1))
            end = min(size, int(match.group(2)) + 1) if match.group(2) else size
        else:  # the last N bytes
            start = max(0, size - int(match.group(2)))
        if start >= size or end <= start:
            return Response(status_code=416, headers={"Content-Range": f"bytes */{size}"})
    headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
    if not range_:  # the whole file, streamed in bounded reads
        def chunks():
            for offset in range(0, size, MAX_RANGE_BYTES):
                yield ctx.engine.read_source(video_id, offset, min(size, offset + MAX_RANGE_BYTES))
        return StreamingResponse(chunks(), media_type=ctype, headers={**headers, "Content-Length": str(size)})
    end = min(end, start + MAX_RANGE_BYTES)
    body = await run_in_threadpool(ctx.engine.read_source, video_id, start, end)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
    return Response(body, status_code=206, media_type=ctype, headers=headers)


@router.get("/videos/{video_id}/compare/{other_id}", response_model=schemas.Compare, dependencies=AUTH,
            responses=ERRORS)
async def compare(video_id: str, other_id: str, ctx: Ctx):
    """Two indexed videos explained: score, confidence, segments, and the frame-to-frame matrix with aligned
    frame pairs (what the web UI's Compare view draws)."""
    try:
        return await run_in_threadpool(ctx.engine.compare, video_id, other_id)
    except InputError as exc:
        raise from_input_error(exc.code, exc.message) from None
