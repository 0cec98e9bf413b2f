"""Localise matching segments from the frame-to-frame similarity matrix S^F.

A temporal-network search: frame pairs (i, j) that clearly match (above a
threshold set between the matrix's background level and its peak) are linked
when both indices move forward by at most `max_gap` samples (the target index
may stay put, for slow motion or pauses), and the chain with the highest total
similarity is a segment. Its frames are removed and the search repeats, so a
query that copies several parts of a target reports several segments.
Speed changes are handled because the chain need not follow one diagonal; a
small cost per second of drift from real time keeps it on the diagonal when
the content alone cannot tell.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Segment:
    query_start: float
    query_end: float
    target_start: float
    target_end: float
    score: float

    def as_dict(self) -> dict[str, float]:
        return {k: round(float(v), 3) for k, v in self.__dict__.items()}


def _step(ts: np.ndarray, duration: float) -> float:
    if len(ts) > 1:
        return float(np.median(np.diff(ts)))
    return duration if duration > 0 else 1.0


def find_segments(sim: np.ndarray, query_ts: np.ndarray, target_ts: np.ndarray, query_duration: float,
                  target_duration: float, max_segments: int = 5, max_gap: int = 4, per_row: int = 5,
                  min_frames: int = 2, min_contrast: float = 0.1, threshold_fraction: float = 0.3,
                  drift_penalty: float = 0.05, background_cap: float = 0.5) -> list[Segment]:
    """S^F (Tq x Tt) plus the frames' timestamps (s) -> segments, best first.

    A segment is reported only if its frames average `min_contrast` above the
    background, the matrix's median: unrelated videos have no segment to show.
    The background is capped at `background_cap` (plain cosine S^F, which
    unrelated frames stay well below), because when the query covers most of
    a short or static target, the median is the match itself.
    Each link of a chain costs `drift_penalty` per second by which the target
    advanced more or less than the query: in static scenes many chains score
    almost alike, and without it the best one could drift at up to `max_gap`
    times real speed and overshoot the copied span.
    """
    sim = np.asarray(sim, dtype=np.float32)
    tq, tt = sim.shape
    if tq == 0 or tt == 0:
        return []
    peak = float(sim.max())
    background = min(float(np.median(sim)), background_cap)
    threshold = background + threshold_fraction * (peak - background)
    if peak < background + min_contrast:
        return []
    k = min(per_row, tt)
    cols = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    cand = [(i, int(j), float(sim[i, j])) for i in range(tq) for j in cols[i] if sim[i, j] >= threshold]
    cand.sort()
    min_len = min(min_frames, tq, tt)
    segments: list[Segment] = []
    q_step, t_step = _step(query_ts, query_duration), _step(target_ts, target_duration)
    used_q = np.zeros(tq, bool)
    used_t = np.zeros(tt, bool)
    while len(segments) < max_segments:
        cand = [c for c in cand if not used_q[c[0]] and not used_t[c[1]]]
        if not cand:
            break
        best_score = np.array([c[2] for c in cand])
        parent = np.full(len(cand), -1)
        by_row: dict[int, list[int]] = {}
        for idx, (i, j, s) in enumerate(cand):
            for di in range(1, max_gap + 1):
                query_advance = float(query_ts[i] - query_ts[i - di]) if i >= di else 0.0
                for p in by_row.get(i - di, ()):
                    pj = cand[p][1]
                    if not 0 <= j - pj <= max_gap:
                        continue
                    drift = abs(float(target_ts[j] - target_ts[pj]) - query_advance)
                    total = best_score[p] + s - drift_penalty * drift
                    if total > best_score[idx]:
                        best_score[idx] = total
                        parent[idx] = p
            by_row.setdefault(i, []).append(idx)
        end = int(best_score.argmax())
        path = [end]
        while parent[path[-1]] >= 0:
            path.append(int(parent[path[-1]]))
        path.reverse()
        pairs = [cand[p] for p in path]
        i0, i1 = pairs[0][0], pairs[-1][0]
        j0 = min(p[1] for p in pairs)
        j1 = max(p[1] for p in pairs)
        used_q[i0 : i1 + 1] = True
        used_t[j0 : j1 + 1] = True
        mean_score = float(np.mean([p[2] for p in pairs]))
        if len(pairs) < min_len or mean_score < background + min_contrast:
            continue
        segments.append(Segment(
            query_start=float(query_ts[i0]),
            query_end=float(min(query_ts[i1] + q_step, max(query_duration, query_ts[i1]))),
            target_start=float(target_ts[j0]),
            target_end=float(min(target_ts[j1] + t_step, max(target_duration, target_ts[j1]))),
            score=mean_score,
        ))
    segments.sort(key=lambda s: (-(s.query_end - s.query_start) * s.score))
    return segments
