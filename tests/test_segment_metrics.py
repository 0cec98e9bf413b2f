"""VCSL's segment-level precision / recall (bench.segment_metrics) on boxes with known answers."""
from __future__ import annotations

import pytest

from bench.segment_metrics import micro, pair_precision_recall, target_iou

# boxes: (query_start, target_start, query_end, target_end)


def test_an_exact_prediction_scores_one_and_a_missing_one_is_undefined_precision():
    truth = [(0.0, 10.0, 5.0, 15.0)]
    assert pair_precision_recall(truth, truth) == (1.0, 1.0)
    assert pair_precision_recall([], truth) == (None, 0.0)
    assert pair_precision_recall([(0.0, 0.0, 1.0, 1.0)], []) == (0.0, None)  # a segment on a negative


def test_both_axes_count_multiplied():
    truth = [(0.0, 10.0, 10.0, 20.0)]
    # the query axis is right, the target axis covers twice the true span: precision 1 x 1/2
    precision, recall = pair_precision_recall([(0.0, 10.0, 10.0, 30.0)], truth)
    assert precision == pytest.approx(0.5) and recall == pytest.approx(1.0)
    # half the true span on both axes: precision 1, recall 1/2 x 1/2
    precision, recall = pair_precision_recall([(0.0, 10.0, 5.0, 15.0)], truth)
    assert precision == pytest.approx(1.0) and recall == pytest.approx(0.25)


def test_a_prediction_spanning_two_true_segments_and_the_gap_between():
    truth = [(0.0, 0.0, 4.0, 4.0), (6.0, 6.0, 10.0, 10.0)]
    precision, recall = pair_precision_recall([(0.0, 0.0, 10.0, 10.0)], truth)
    assert precision == pytest.approx(0.8 * 0.8) and recall == pytest.approx(1.0)
    # a box touching a true one only off-diagonal (no area in common) earns nothing
    assert pair_precision_recall([(0.0, 6.0, 4.0, 10.0)], truth) == (0.0, 0.0)


def test_micro_averages_precision_over_predictions_and_recall_over_truths():
    pairs = [(1.0, 1.0), (None, 0.0), (0.0, None), (0.5, 0.5)]
    m = micro(pairs)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["F"] == pytest.approx(0.5)
    assert micro([]) == {"precision": 0.0, "recall": 0.0, "F": 0.0}


def test_target_iou_takes_the_best_matching_true_span():
    truth = [(0.0, 0.0, 5.0, 5.0), (5.0, 20.0, 10.0, 30.0)]
    assert target_iou((0.0, 20.0, 5.0, 25.0), truth) == pytest.approx(0.5)
    assert target_iou((0.0, 40.0, 5.0, 45.0), truth) == 0.0
