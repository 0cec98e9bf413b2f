"""Retrieval metrics exactly as the FIVR/EVVE/SVD evaluation code computes them (method doc §3).

* `average_precision`: non-interpolated AP = sum_k Prec@k * rel_k / |G|, where |G| counts every
  relevant video in the database, so a positive never retrieved contributes 0. Ranking is
  `np.argsort(score)[::-1]`, the official tie order.
* `mean_average_precision`: per query over the whole database, the query excluded from its own ranking;
  queries with no positive are skipped.
* `micro_average_precision` (μAP): every (query, target) pair of every query pooled into one ranking.
* `recall_at_k`: share of queries with a relevant video among their first k results.
* `evve_average_precision`: EVVE's trapezoidal rule over the ranks of the true positives.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

Scores = Mapping[str, Mapping[str, float]]  # query -> target -> similarity
Relevant = Mapping[str, set[str]]  # query -> relevant targets


def average_precision(y_true: Iterable[int], y_score: Iterable[float], n_relevant: int) -> float:
    y_true = np.asarray(list(y_true), dtype=np.float64)
    y_score = np.asarray(list(y_score), dtype=np.float64)
    if n_relevant <= 0:
        raise ValueError("n_relevant must be positive")
    ranked = y_true[np.argsort(y_score)[::-1]]
    precision = np.cumsum(ranked) / (np.arange(len(ranked)) + 1)
    return float(np.sum(precision * ranked / n_relevant))


def _pairs(query: str, targets: Mapping[str, float], relevant: set[str], database: set[str]):
    gt = (relevant & database) - {query}
    y_true, y_score = [], []
    for target, score in targets.items():
        if target != query and target in database:
            y_true.append(int(target in gt))
            y_score.append(float(score))
    return y_true, y_score, len(gt)


def mean_average_precision(scores: Scores, relevant: Relevant, database: Iterable[str]) -> float:
    database = set(database)
    aps = []
    for query, targets in scores.items():
        y_true, y_score, n = _pairs(query, targets, relevant.get(query, set()), database)
        if n:
            aps.append(average_precision(y_true, y_score, n))
    return float(np.mean(aps)) if aps else float("nan")


def micro_average_precision(scores: Scores, relevant: Relevant, database: Iterable[str]) -> float:
    database = set(database)
    y_true, y_score, total = [], [], 0
    for query, targets in scores.items():
        t, s, n = _pairs(query, targets, relevant.get(query, set()), database)
        y_true += t
        y_score += s
        total += n
    return average_precision(y_true, y_score, total) if total else float("nan")


def recall_at_k(scores: Scores, relevant: Relevant, database: Iterable[str], k: int) -> float:
    database = set(database)
    hits = []
    for query, targets in scores.items():
        gt = (relevant.get(query, set()) & database) - {query}
        if not gt:
            continue
        ranked = sorted((t for t in targets if t != query and t in database), key=lambda t: -targets[t])
        hits.append(float(any(t in gt for t in ranked[:k])))
    return float(np.mean(hits)) if hits else float("nan")


def evve_average_precision(positive_ranks: list[int], n_positives: int) -> float:
    """Trapezoidal AP: for the n-th true positive (0-based) at 0-based rank r, add
    (p0 + p1) / 2 / |G| with p0 = 1 if r == 0 else n / r and p1 = (n + 1) / (r + 1)."""
    if n_positives == 0 or not positive_ranks:
        return 0.0
    ap = 0.0
    for n, rank in enumerate(positive_ranks):
        p0 = 1.0 if rank == 0 else n / rank
        p1 = (n + 1) / (rank + 1)
        ap += (p0 + p1) / 2.0 / n_positives
    return ap


def summary(scores: Scores, relevant: Relevant, database: Iterable[str]) -> dict[str, float]:
    database = set(database)
    return {
        "mAP": mean_average_precision(scores, relevant, database),
        "uAP": micro_average_precision(scores, relevant, database),
        "R@1": recall_at_k(scores, relevant, database, 1),
        "R@10": recall_at_k(scores, relevant, database, 10),
    }
