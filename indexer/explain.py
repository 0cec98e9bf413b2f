"""Why two videos match, in a form a front end can draw: the frame-to-frame similarity matrix the segments
were found on (pooled to a bounded size and quantised to bytes), the segments on it, and aligned frame pairs
with their similarity. The web UI's Compare view draws exactly this (service/ui/)."""
from __future__ import annotations

import base64

import numpy as np

#: the longest side of a matrix sent to a front end: 128 x 128 bytes is 22 KB of base64
MAX_SIDE = 128
#: aligned frame pairs shown per segment
PAIRS_PER_SEGMENT = 4


def _pool(n: int, side: int) -> np.ndarray:
    """Bin starts that split n frames into at most `side` bins."""
    return np.unique(np.linspace(0, n, min(n, side) + 1).astype(int))[:-1] if n else np.zeros(0, dtype=int)


def matrix_view(sim: np.ndarray, query_times: np.ndarray, target_times: np.ndarray, segments: list[dict],
                max_side: int = MAX_SIDE) -> dict:
    """`sim`: Tq x Tt cosine similarities (rows: query frames at `query_times`, columns: target frames).

    Returns `rows`, `cols`, `data` (base64 of rows x cols uint8, row-major: round(255 * clip(sim, 0, 1)),
    max-pooled so that a short strong diagonal survives pooling), `query_times` / `target_times` (the
    first frame time of each row / column), `segments` as given, and `pairs`: aligned (query time, target
    time, similarity) points spread along each segment, for key-frame pairs.
    """
    sim = np.asarray(sim, dtype=np.float32)
    qt, tt = np.asarray(query_times, dtype=np.float64), np.asarray(target_times, dtype=np.float64)
    row_bins, col_bins = _pool(sim.shape[0], max_side), _pool(sim.shape[1], max_side)
    pooled = sim
    if sim.size:
        pooled = np.maximum.reduceat(np.maximum.reduceat(sim, row_bins, axis=0), col_bins, axis=1)
    data = np.round(255 * np.clip(pooled, 0.0, 1.0)).astype(np.uint8)
    pairs = []
    for s in segments:
        for f in (np.arange(PAIRS_PER_SEGMENT) + 0.5) / PAIRS_PER_SEGMENT:  # inside the span, not on its ends
            q = s["query_start"] + f * (s["query_end"] - s["query_start"])
            t = s["target_start"] + f * (s["target_end"] - s["target_start"])
            if not (qt.size and tt.size):
                continue
            i, j = int(np.argmin(np.abs(qt - q))), int(np.argmin(np.abs(tt - t)))
            pairs.append({"query_time": round(float(qt[i]), 3), "target_time": round(float(tt[j]), 3),
                          "similarity": round(float(sim[i, j]), 4)})
    return {"rows": int(data.shape[0]), "cols": int(data.shape[1]) if data.ndim == 2 else 0,
            "data": base64.b64encode(data.tobytes()).decode(),
            "query_times": [round(float(qt[i]), 3) for i in row_bins] if qt.size else [],
            "target_times": [round(float(tt[j]), 3) for j in col_bins] if tt.size else [],
            "segments": segments, "pairs": pairs}
