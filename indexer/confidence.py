"""Calibrated confidence: the probability that a (query, result) pair is a copy, from what the engine
measured about the pair.

The re-rank score orders results well but is not a probability: unrelated pairs sit near 0.48 and
copies start just above, and where a copy ends up depends on the edit. So each result carries its
*evidence*, a few numbers the engine already has (`evidence`), and a logistic model fitted on held-out
pairs maps them to a probability (`Calibration`). The fit (bench/copies/calibrate.py) uses edited
copies of train clips and collection scans of clips that are not test clips; its coefficients ship as model/assets/confidence.json together with the
model they were fitted for (`Engine.scoring_model`: encoder, PCA and checkpoint digests, not the
encoder's precision), because a new checkpoint or encoder moves every score: a map fitted for another
model is not used (the results then carry `confidence: null`), and `python -m bench.copies.calibrate`
refits it.
"""
from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parents[1] / "model" / "assets" / "confidence.json"
FORMAT = "hapvr-confidence/1"
#: the evidence the model weighs, in the order of its coefficients (`evidence` also reports the coarse score
#: and the coverage: with these four they add nothing on held-out pairs, and the coarse score's weight came
#: out negative)
FEATURES = ("score", "segment_score", "background", "level")
#: the highest confidence a pair of different files gets (as results round it to 4 decimals): 1 means the
#: same bytes (an exact duplicate)
MAX_CONFIDENCE = 0.9999


def evidence(score: float, coarse_score: float, segments: list[dict], query_duration: float,
             target_duration: float, sim: np.ndarray | None = None) -> dict[str, float]:
    """The measurements of one pair that its confidence is computed from.

    `coverage` is the share of the shorter video inside the matched segments (its own timeline's
    segments, overlaps counted once): an excerpt of a long film covers all of the query, a copy inserted
    into a long unrelated stream all of the target. `segment_score` is the best segment's mean contrast
    (indexer.segments): how far its frames stand out of the matrix's background. From the plain-cosine
    frame matrix `sim`: `background`, its median, and `level`, the mean over query frames of their best
    match. Clips of one static scene (one table and camera, a talking head, a lab rig) match everywhere:
    a high background with a high level, where a copy of moving content has a low background and a high
    level; the model learns how much that says.
    """
    side = "query" if query_duration <= target_duration else "target"
    length = min(query_duration, target_duration)
    spans = sorted((s[f"{side}_start"], s[f"{side}_end"]) for s in segments)
    covered, reach = 0.0, -math.inf
    for start, end in spans:
        start = max(start, reach)
        if end > start:
            covered += end - start
            reach = end
    out = {"score": float(score), "coarse_score": float(coarse_score),
           "coverage": min(1.0, covered / length) if length > 0 else 0.0,
           "segment_score": max((float(s["score"]) for s in segments), default=0.0)}
    has = sim is not None and sim.size > 0
    out["background"] = float(np.median(sim)) if has else 0.0
    out["level"] = float(sim.max(axis=1).mean()) if has else 0.0
    return out


@dataclass(frozen=True)
class Calibration:
    """A fitted logistic map from evidence to probability: p = sigmoid(bias + sum(w_i * x_i))."""

    model: str  # Engine.scoring_model of the engine it was fitted with
    weights: tuple[float, ...]
    bias: float
    method: str = "logistic regression on " + ", ".join(FEATURES)
    fitted_on: str = ""

    def confidence(self, ev: dict[str, float]) -> float:
        """The probability, at most MAX_CONFIDENCE: exactly 1 is kept for files with the same bytes."""
        z = self.bias + sum(w * ev[name] for w, name in zip(self.weights, FEATURES))
        return min(MAX_CONFIDENCE, 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0)

    def to_json(self) -> dict:
        return {"format": FORMAT, "model": self.model, "features": list(FEATURES),
                "weights": list(self.weights), "bias": self.bias, "method": self.method, "fitted_on": self.fitted_on}

    def save(self, path: str | Path) -> None:
        """Written atomically: a reader never sees half a file."""
        path = Path(path)
        tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        raw = json.loads(Path(path).read_text())
        if raw.get("format") != FORMAT or tuple(raw.get("features", ())) != FEATURES:
            raise ValueError(f"{path}: not a {FORMAT} file with features {FEATURES}")
        return cls(model=raw["model"], weights=tuple(float(w) for w in raw["weights"]),
                   bias=float(raw["bias"]), method=raw.get("method", ""), fitted_on=raw.get("fitted_on", ""))


def load_for(model: str, path: str | Path | None = None) -> Calibration | None:
    """The calibration at `path` (default: the shipped one) if it was fitted for `model` (an
    `Engine.scoring_model`); else None, with a warning that says how to refit."""
    path = Path(path) if path is not None else SHIPPED
    if not path.is_file():
        log.warning("no confidence calibration at %s: results carry no confidence", path)
        return None
    try:
        calibration = Calibration.load(path)
    except (ValueError, KeyError, TypeError) as exc:  # json.JSONDecodeError is a ValueError
        log.warning("%s is not a usable confidence map (%s): results carry no confidence", path, exc)
        return None
    if calibration.model != model:
        log.warning("the confidence calibration at %s was fitted for %s, the engine runs %s: results carry no "
                    "confidence (refit with `python -m bench.copies.calibrate`)", path, calibration.model, model)
        return None
    return calibration
