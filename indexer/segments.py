"""Localise copied segments in the frame-to-frame similarity matrix S^F: line voting, then the best run.

A copied segment is a straight line in S^F: query time t maps to target time r * t + b, with the speed
r = 1 unless the copy was sped up or slowed down. Unrelated pairs have no line; an edited copy (rotated,
re-framed, screen-recorded, side by side, a small inset) has a line whose similarities are weak but
consistently above what the same frames score against everything else. So the aligner

1. measures *contrast*: each similarity minus the background of its row and column (their medians,
   capped at `background_cap`, about where unrelated frames sit, so that a query covering a static
   target is not its own background), clipped at zero. A frame that resembles every frame adds
   nothing; a weak but specific match adds its margin.
2. *votes* every cell's contrast into a histogram over (speed, offset), for the speeds in `speeds`
   (offsets in units of the target's frame step, spread over neighbouring bins), and takes the peak:
   the line that the most contrast agrees on (Hough voting over offsets, as in Douze et al. 2010).
3. walks the line along the query: each query frame's evidence is its best contrast within `tolerance`
   frames of the line, minus `elsewhere_cost` times what it gives up against its best match anywhere (a
   frame that matches another line better belongs to that line) and `frame_cost`; the segment is the run
   with the largest total evidence (a maximum-sum subarray): it bridges a few weak frames between strong
   ones and stops where the copy stops, without a threshold on one frame's similarity.
4. keeps the run if it has `min_frames` and its mean contrast reaches `min_contrast`, takes its query
   frames out of the vote, and repeats: a compilation of two excerpts, or a copy split by an insertion,
   gives several segments. The target may be matched twice (a loop). The query span reaches half way to
   the neighbouring samples (`span_seconds`); the target span is the query span carried along the line.

Speeds are bounded (`speeds`), so no segment maps a long query span onto a second of target. The
parameters were chosen on the validation queries of the copy benchmark and their hard negatives
(bench.copies.segments --tune), never on test ones. `align` says why a pair has no segment (`Alignment.reason`).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: target speed relative to the query that lines may have: slow motion to double speed
SPEEDS = (0.5, 2 / 3, 0.75, 1.0, 4 / 3, 1.5, 2.0)

#: why a pair has no segment (Alignment.reason)
NO_FRAMES = "no_frames"  # one of the videos has no informative frame
NO_CONTRAST = "no_contrast"  # no frame pair stands out of the matrix's background
NO_ALIGNED_RUN = "no_aligned_run"  # similar frames, but no run of them along one line in time


@dataclass
class Segment:
    query_start: float
    query_end: float
    target_start: float
    target_end: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.__dict__.items()}


@dataclass
class Alignment:
    """The segments of one pair, best first, and, when there are none, the reason (a constant above)."""
    segments: list[Segment] = field(default_factory=list)
    reason: str | None = None


def _step(ts: np.ndarray, duration: float) -> float:
    if len(ts) > 1:
        return float(np.median(np.diff(ts)))
    return duration if duration > 0 else 1.0


def span_seconds(ts: np.ndarray, first: int, last: int, duration: float) -> tuple[float, float]:
    """The time span of sampled frames `first`..`last` (indices into `ts`, sorted).

    A copy that shows frame `first` but not the sample before it began somewhere in between, so the span
    starts half way to that sample (the unbiased estimate); likewise at the end. Where that neighbour is
    missing (a blank frame left out, or the video's start), the span reaches half a sampling step out,
    except that a video's end within a step of its last sample is reached (nothing was left out there)."""
    step = _step(np.asarray(ts), duration)
    t0, t1 = float(ts[first]), float(ts[last])
    before = float(ts[first - 1]) if first > 0 else None
    after = float(ts[last + 1]) if last + 1 < len(ts) else None
    if before is not None and t0 - before <= 1.5 * step:
        start = (before + t0) / 2
    else:
        start = max(0.0, t0 - step / 2)
    if after is not None and after - t1 <= 1.5 * step:
        end = (t1 + after) / 2
    elif after is None and duration - t1 <= 1.5 * step:
        end = max(duration, t1)
    else:
        end = t1 + step / 2
    return start, end


def _contrast(sim: np.ndarray, background_cap: float) -> np.ndarray:
    rows = np.minimum(np.median(sim, axis=1, keepdims=True), background_cap)
    cols = np.minimum(np.median(sim, axis=0, keepdims=True), background_cap)
    return np.clip(sim - np.maximum(rows, cols), 0.0, None)


def _best_line(contrast: np.ndarray, active: np.ndarray, qt: np.ndarray, tt: np.ndarray, t_step: float,
               speeds: tuple[float, ...], speed_prior: float) -> tuple[float, float, float]:
    """(votes, speed, offset in seconds) of the histogram's peak over the active query rows."""
    rows = np.flatnonzero(active)
    weights = contrast[rows]
    best = (0.0, 1.0, 0.0)
    for speed in speeds:
        offsets = (tt[None, :] - speed * qt[rows, None]) / t_step  # in target frame steps
        lo = int(np.floor(offsets.min())) - 1
        bins = np.rint(offsets).astype(np.int64) - lo
        hist = np.bincount(bins.ravel(), weights=weights.ravel(), minlength=int(bins.max()) + 2)
        hist = np.convolve(hist, (0.5, 1.0, 0.5), mode="same")  # a line between two bins votes in both
        peak = int(hist.argmax())
        votes = float(hist[peak]) * (1.0 if speed == 1.0 else speed_prior)
        if votes > best[0]:
            best = (votes, speed, (peak + lo) * t_step)
    return best


def _max_run(gain: np.ndarray) -> tuple[int, int, float]:
    """The contiguous run [start, end] of `gain` with the largest sum (Kadane); -inf entries break runs."""
    best, start, best_run = -np.inf, 0, (0, -1)
    total = 0.0
    for i, g in enumerate(gain):
        if total <= 0:  # also after a -inf
            total, start = g, i
        else:
            total += g
        if total > best:
            best, best_run = total, (start, i)
    return best_run[0], best_run[1], float(best)


def align(sim: np.ndarray, query_ts: np.ndarray, target_ts: np.ndarray, query_duration: float,
          target_duration: float, max_segments: int = 5, speeds: tuple[float, ...] = SPEEDS,
          tolerance: float = 1.0, frame_cost: float = 0.0, min_contrast: float = 0.1, min_frames: int = 2,
          background_cap: float = 0.1, speed_prior: float = 0.9, elsewhere_cost: float = 1.0) -> Alignment:
    """S^F (Tq x Tt, plain cosine) plus the frames' timestamps (s) -> the pair's segments, best first.

    `tolerance` is in target frames; `frame_cost` and `min_contrast` are on the contrast scale (cosine
    above the background); `speed_prior` discounts the votes of lines that are not at real speed, so that a
    static scene, where many lines score alike, is read at real speed.
    """
    sim = np.asarray(sim, dtype=np.float32)
    tq, tt = sim.shape
    if tq == 0 or tt == 0:
        return Alignment(reason=NO_FRAMES)
    qt = np.asarray(query_ts, dtype=np.float64)
    tgt = np.asarray(target_ts, dtype=np.float64)
    t_step = _step(tgt, target_duration)
    contrast = _contrast(sim, background_cap)
    row_best = contrast.max(axis=1)
    if not contrast.any():
        return Alignment(reason=NO_CONTRAST)
    min_len = min(min_frames, tq, tt)
    active = np.ones(tq, bool)
    segments: list[tuple[float, Segment]] = []
    for _ in range(max_segments):
        if not active.any():
            break
        votes, speed, offset = _best_line(contrast, active, qt, tgt, t_step, speeds, speed_prior)
        if votes <= 0:
            break
        expected = speed * qt + offset  # the line's target time for every query frame
        near = np.abs(tgt[None, :] - expected[:, None]) <= tolerance * t_step + 1e-6
        on_line = np.where(near, contrast, -1.0)
        cols = on_line.argmax(axis=1)
        evidence = on_line[np.arange(tq), cols]
        inside = near.any(axis=1) & active
        # a frame that matches much better elsewhere belongs to another line: it pays for the difference
        gain = np.where(inside, evidence - frame_cost - elsewhere_cost * (row_best - evidence), -np.inf)
        i0, i1, total = _max_run(gain)
        if i1 < i0 or not np.isfinite(total):
            break
        run = np.arange(i0, i1 + 1)
        active[run] = False  # these query frames are explained (or not worth a segment): vote without them
        strong = run[evidence[run] > frame_cost]
        if len(run) < min_len or len(strong) == 0 or float(evidence[run].mean()) < min_contrast:
            continue
        matched = cols[strong]
        # the target span is the query span carried along the line (its offset refined on the run's
        # frames): its length is the query's times the line's speed, never a long span squeezed onto a second
        offset = float(np.median(tgt[matched] - speed * qt[strong]))
        query_start, query_end = span_seconds(qt, i0, i1, query_duration)
        target_end_max = max(target_duration, float(tgt[-1]))
        query_start = max(query_start, -offset / speed)
        query_end = min(query_end, (target_end_max - offset) / speed)
        target_start = max(0.0, speed * query_start + offset)
        target_end = min(target_end_max, speed * query_end + offset)
        if query_end <= query_start or target_end <= target_start:
            continue
        segments.append((total, Segment(query_start, query_end, target_start, target_end,
                                        score=float(sim[strong, matched].mean()))))
    if not segments:
        return Alignment(reason=NO_ALIGNED_RUN)
    segments.sort(key=lambda item: -item[0])
    return Alignment([segment for _, segment in segments])


def find_segments(sim: np.ndarray, query_ts: np.ndarray, target_ts: np.ndarray, query_duration: float,
                  target_duration: float, **params) -> list[Segment]:
    """The segments of `align`, without the reason."""
    return align(sim, query_ts, target_ts, query_duration, target_duration, **params).segments
