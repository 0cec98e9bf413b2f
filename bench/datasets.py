"""Readers and protocols of the public benchmarks, for users who own them (method doc §3).

Nothing here downloads anything; point the readers at the official files:
* FIVR-5K / FIVR-200K: `fivr_audio.pickle` ({'annotation': {query: {label: [ids]}}, '5k'|'200k':
  {'queries', 'database'}}) and `fivr_easy_duplicates.txt`.
* EVVE: `evve.pickle` ({'annotation': {event: (queries, positives, null)}, 'queries', 'database'}).
* SVD: `test_groundtruth` (lines "query candidate label") and `unlabeled-data-id` (one id per line).
* Features: the released HDF5 files, one dataset per video id holding T x 9 x 512 (already PCA-whitened).
"""
from __future__ import annotations

import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np

from bench.metrics import Scores, average_precision, evve_average_precision, mean_average_precision, \
    micro_average_precision

FIVR_TASKS = {"DSVR": ("ND", "DS"), "CSVR": ("ND", "DS", "CS"), "ISVR": ("ND", "DS", "CS", "IS")}


class FIVR:
    def __init__(self, annotation_pickle: str | Path, version: str = "5k", easy_duplicates: str | Path | None = None):
        with open(annotation_pickle, "rb") as f:
            data = pickle.load(f)
        self.version = version
        self.annotation = data["annotation"]
        self.queries = sorted(data[version]["queries"])
        self.database = sorted(data[version]["database"])
        self.easy = set()
        if easy_duplicates is not None:
            self.easy = set(Path(easy_duplicates).read_text().split())

    def relevant(self, labels: tuple[str, ...]) -> dict[str, set[str]]:
        out = {}
        for q in self.queries:
            sets = self.annotation.get(q, {})
            out[q] = set().union(*(set(sets.get(label, [])) for label in labels))
        return out

    def evaluate(self, scores: Scores, loaded: set[str] | None = None) -> dict[str, float]:
        """mAP (DSVR/CSVR/ISVR) and μAP (DSVD/CSVD/ISVD), plus the `_h` variants without easy duplicates."""
        db = set(self.database) if loaded is None else set(self.database) & set(loaded)
        scores = {q: t for q, t in scores.items() if q in self.queries}
        results = {}
        for suffix, database in (("", db), ("_h", db - self.easy)):
            for task, labels in FIVR_TASKS.items():
                rel = self.relevant(labels)
                results[task + suffix] = mean_average_precision(scores, rel, database)
                results[task[:-1] + "D" + suffix] = micro_average_precision(scores, rel, database)
        return results


class EVVE:
    def __init__(self, annotation_pickle: str | Path):
        with open(annotation_pickle, "rb") as f:
            data = pickle.load(f)
        self.events = data["annotation"]
        self.queries = sorted(data["queries"])
        self.database = sorted(data["database"])
        self.event_of = {q: ev for ev, (queries, _, _) in self.events.items() for q in queries}

    def evaluate(self, scores: Scores, loaded: set[str] | None = None) -> dict[str, float]:
        """mAP = mean over all queries of EVVE's trapezoidal AP; μAP pooled (non-interpolated)."""
        db = set(self.database) if loaded is None else set(self.database) & set(loaded)
        aps, pooled_true, pooled_score, total = [], [], [], 0
        for q in self.queries:
            if q not in scores:
                continue
            _, positives, _ = self.events[self.event_of[q]]
            positives = set(positives) & db
            ranked = sorted((t for t in scores[q] if t in db), key=lambda t: -scores[q][t])
            ranks = [r for r, t in enumerate(ranked) if t in positives]
            aps.append(evve_average_precision(ranks, len(positives)))
            total += len(positives)
            for t in ranked:
                pooled_true.append(int(t in positives))
                pooled_score.append(scores[q][t])
        return {"EVVE_mAP": float(np.mean(aps)) if aps else float("nan"),
                "EVVE_uAP": average_precision(pooled_true, pooled_score, total) if total else float("nan")}


class SVD:
    def __init__(self, groundtruth: str | Path, unlabeled_ids: str | Path | None = None):
        self.ground_truth: OrderedDict[str, dict[str, int]] = OrderedDict()
        for line in Path(groundtruth).read_text().splitlines():
            parts = line.strip().split(" ")
            if len(parts) >= 3:
                self.ground_truth.setdefault(parts[0], {})[parts[1]] = int(parts[-1])
        self.unlabeled = Path(unlabeled_ids).read_text().split() if unlabeled_ids else []
        self.queries = sorted(self.ground_truth)

    def evaluate(self, scores: Scores) -> dict[str, float]:
        """Per query: its own labelled candidates plus every unlabeled distractor (as negatives).

        mAP uses the step-wise AP of sklearn's `average_precision_score` (ties grouped), as the official code.
        """
        aps, pooled_true, pooled_score = [], [], []
        for q, labelled in self.ground_truth.items():
            res = scores[q]
            y_true = [label for t, label in labelled.items()] + [0] * len(self.unlabeled)
            y_score = [res[t] for t in labelled] + [res[t] for t in self.unlabeled]
            aps.append(step_average_precision(y_true, y_score))
            pooled_true += y_true
            pooled_score += y_score
        n = sum(pooled_true)
        return {"mAP": float(np.mean(aps)), "uAP": average_precision(pooled_true, pooled_score, n) if n else float("nan")}


def step_average_precision(y_true: list[int], y_score: list[float]) -> float:
    """sklearn's average_precision_score: sum over distinct thresholds of (R_n - R_{n-1}) P_n."""
    y_true = np.asarray(y_true, dtype=np.float64)
    y_score = np.asarray(y_score, dtype=np.float64)
    order = np.argsort(-y_score, kind="mergesort")
    y_true, y_score = y_true[order], y_score[order]
    distinct = np.where(np.diff(y_score))[0]
    ends = np.r_[distinct, len(y_true) - 1]
    tps = np.cumsum(y_true)[ends]
    precision = tps / (ends + 1)
    recall = tps / tps[-1] if tps[-1] else np.zeros_like(tps)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def read_hdf5_features(path: str | Path, video_ids: list[str] | None = None, min_frames: int = 8):
    """Yield (video id, T x 9 x 512 float32) from a released feature file; short videos are tiled
    to `min_frames` (HAP-VR's evaluator); 2-D (T x D) features become T x 1 x D. Unreadable videos
    are skipped, as the official generator does, so the caller can drop them from the ground truth."""
    import h5py

    with h5py.File(path, "r") as f:
        for vid in video_ids if video_ids is not None else list(f.keys()):
            try:
                feats = np.asarray(f[vid][:], dtype=np.float32)
            except (KeyError, OSError, ValueError):
                continue
            if feats.ndim == 2:
                feats = feats[:, None, :]
            while len(feats) < min_frames:
                feats = np.concatenate([feats, feats])
            yield vid, feats
