"""Pydantic models of the HTTP API (they generate the OpenAPI schema in docs/API.md)."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. not_a_video, too_large, unauthorized")
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class ImportFile(BaseModel):
    path: str = Field(description="path relative to HAPVR_IMPORT_ROOT")
    external_id: str | None = None
    metadata: dict[str, Any] | None = None


class ImportRequest(BaseModel):
    files: list[ImportFile] = Field(min_length=1)
    force: bool = False


class JobRef(BaseModel):
    job_id: str
    filename: str | None = None
    state: str


class IndexAccepted(BaseModel):
    jobs: list[JobRef]


class JobOut(BaseModel):
    id: str
    kind: Literal["index", "query", "duplicates"]
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    stage: str = Field(description="queued, decoding, embedding, indexing, done, failed, cancelled")
    progress: float = Field(description="percent")
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = Field(None, description="index: {video_id, created, video}; query: a QueryResult")
    timings_ms: dict[str, float] = {}
    created: float
    updated: float
    attempts: int


class JobSummary(JobOut):
    filename: str | None = Field(None, description="the upload's file name, the query's label or video id")


class JobList(BaseModel):
    jobs: list[JobSummary]
    queue_depth: int
    jobs_by_state: dict[str, int]
    workers_alive: int


class Segment(BaseModel):
    query_start: float
    query_end: float
    target_start: float
    target_end: float
    score: float


class AlignedPair(BaseModel):
    query_time: float
    target_time: float
    similarity: float


class MatrixView(BaseModel):
    """The frame-to-frame similarity matrix segments were found on (indexer/explain.py)."""

    rows: int
    cols: int
    data: str = Field(description="base64 of rows x cols bytes, row-major: round(255 * clip(cosine, 0, 1)), "
                      "max-pooled to at most 128 per side")
    query_times: list[float] = Field(description="seconds of the query frame each row starts at")
    target_times: list[float] = Field(description="seconds of the target frame each column starts at")
    segments: list[Segment]
    pairs: list[AlignedPair] = Field(description="aligned frame pairs spread along each segment")


class Match(BaseModel):
    id: str
    source: str
    score: float | None = Field(description="the re-rank score (ranks results; not a probability); null only for "
                                "an exact duplicate the search did not score")
    confidence: float | None = Field(description="calibrated probability that the pair is a copy, in [0, 1] "
                                     "(docs/MODEL.md, 'Confidence'); 1 for an exact duplicate; null when no "
                                     "calibration fits the engine's model version")
    exact_duplicate: bool = Field(False, description="the indexed file has the query file's bytes (same sha256)")
    coarse_score: float | None = None
    mirrored: bool = Field(False, description="the match was found with the query flipped left to right")
    segments: list[Segment] = Field(description="matched spans, best first, on the query's and the target's "
                                    "timelines (seconds)")
    segments_reason: Literal["no_frames", "no_contrast", "no_aligned_run"] | None = Field(
        None, description="present when `segments` is empty: no_frames (a video has no informative frame), "
        "no_contrast (no frame pair stands out of the pair's background), no_aligned_run (similar frames, "
        "but no run of them along one line in time)")
    matrix: MatrixView | None = Field(None, description="with `matrices`: the evidence the Compare view draws")


class QueryResult(BaseModel):
    query: str
    results: list[Match]
    note: str | None = Field(None, description="why there are no results when the query itself gives no "
                             "evidence (every frame blank)")
    timings_ms: dict[str, float]


class QueryById(BaseModel):
    video_id: str
    top_k: int | None = Field(None, ge=1, le=1000)
    min_score: float | None = None
    min_confidence: float | None = Field(None, ge=0.0, le=1.0)
    matrices: bool = Field(False, description="add each result's frame-to-frame matrix (`matrix`)")


class KeyframeList(BaseModel):
    times: list[float] = Field(description="seconds of each stored key frame")
    width: int
    height: int


class Compare(BaseModel):
    query: "Video"
    target: "Video"
    score: float
    confidence: float | None
    segments: list[Segment]
    segments_reason: str | None = None
    matrix: MatrixView


class QueryAccepted(BaseModel):
    job_id: str
    state: str


class Video(BaseModel):
    id: str
    source: str
    external_id: str | None
    sha256: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    frames: int
    model_version: str
    metadata: dict[str, Any]
    created: float


class VideoPage(BaseModel):
    videos: list[Video]
    offset: int
    limit: int
    total: int


class Ready(BaseModel):
    ready: bool
    checks: dict[str, bool | int | str]


class DuplicatesRequest(BaseModel):
    min_confidence: float = Field(0.5, ge=0.0, le=1.0, description="sets hold together at this mean confidence "
                                  "of their pairs")


class DuplicateVideo(BaseModel):
    id: str
    source: str
    external_id: str | None = None
    duration: float
    width: int
    height: int
    sha256: str


class DuplicateSegment(BaseModel):
    a_start: float
    a_end: float
    b_start: float
    b_end: float
    score: float


class DuplicatePair(BaseModel):
    a: str
    b: str
    confidence: float
    segments: list[DuplicateSegment] = Field(description="matched spans on a's and b's timelines (seconds)")


class DuplicateGroup(BaseModel):
    videos: list[DuplicateVideo] = Field(description="the set, its representative first")
    representative: str = Field(description="the longest video, then the most pixels, then the first indexed")
    pairs: list[DuplicatePair] = Field(description="every scored pair inside the set, best first")


class Duplicates(BaseModel):
    groups: list[DuplicateGroup] = Field(description="largest set first; videos in no set are not listed")
    min_confidence: float
    grouped: int = Field(description="videos in a set")
    videos: int = Field(description="videos in the collection")
    scanned_now: int = Field(description="videos whose neighbours this job scored (the others were scanned before)")
    pairs_scored: int
    neighbours: int
    model: str
    elapsed_s: float
    created: float


Compare.model_rebuild()
