"""Segment-level localisation metrics: VCSL's copy-overlap precision / recall (He et al., CVPR 2022) and IoU.

A segment pair is a box on (query time, target time): (query_start, target_start, query_end, target_end),
seconds. For one video pair with predicted boxes P and true boxes G, precision on one axis is the length of
each predicted box's overlap with the true boxes it intersects (union of those overlaps, on that axis),
summed over P, over the summed length of P on that axis; the pair's precision is the product of the
query-axis and target-axis precisions. Recall is the same with P and G swapped. Over many pairs the
averages are micro: precision over the pairs with a prediction, recall over the pairs with a truth.
(Our own implementation of the protocol described in the paper and used by its code.)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

Box = tuple[float, float, float, float]  # query_start, target_start, query_end, target_end


def box(segment: dict[str, float]) -> Box:
    return (segment["query_start"], segment["target_start"], segment["query_end"], segment["target_end"])


def _union_length(spans: Iterable[tuple[float, float]]) -> float:
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def _covered_share(boxes: Sequence[Box], others: Sequence[Box]) -> float:
    """Product over the two axes of: sum over `boxes` of the union of its overlaps with the `others` it
    intersects (with positive area), over the summed length of `boxes`."""
    shares = []
    for axis in (0, 1):
        covered = length = 0.0
        for b in boxes:
            length += b[axis + 2] - b[axis]
            overlaps = []
            for o in others:
                lo = (max(b[0], o[0]), max(b[1], o[1]))
                hi = (min(b[2], o[2]), min(b[3], o[3]))
                if hi[0] > lo[0] and hi[1] > lo[1]:
                    overlaps.append((lo[axis], hi[axis]))
            covered += _union_length(overlaps)
        shares.append(covered / length if length > 0 else 0.0)
    return shares[0] * shares[1]


def pair_precision_recall(predicted: Sequence[Box], truth: Sequence[Box]) -> tuple[float | None, float | None]:
    """(precision, recall) of one pair; None where it is undefined (no prediction, or no truth)."""
    precision = _covered_share(predicted, truth) if predicted else None
    recall = _covered_share(truth, predicted) if truth else None
    return precision, recall


def micro(pairs: Iterable[tuple[float | None, float | None]]) -> dict[str, float]:
    """Micro averages over pairs: precision over pairs with a prediction, recall over pairs with a truth."""
    precisions, recalls = [], []
    for p, r in pairs:
        if p is not None:
            precisions.append(p)
        if r is not None:
            recalls.append(r)
    p = sum(precisions) / len(precisions) if precisions else 0.0
    r = sum(recalls) / len(recalls) if recalls else 0.0
    return {"precision": p, "recall": r, "F": 2 * p * r / (p + r) if p + r > 0 else 0.0}


def target_iou(predicted: Box, truth: Sequence[Box]) -> float:
    """IoU on the target axis of one predicted box with the true box it overlaps most there."""
    best = 0.0
    for t in truth:
        inter = max(0.0, min(predicted[3], t[3]) - max(predicted[1], t[1]))
        union = max(predicted[3], t[3]) - min(predicted[1], t[1])
        best = max(best, inter / union if union > 0 else 0.0)
    return best
