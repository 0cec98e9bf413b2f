"""Segment localisation on similarity matrices with known answers."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.segments import find_segments


def noise(tq: int, tt: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, 0.15, size=(tq, tt)).astype(np.float32)


def test_diagonal_excerpt():
    sim = noise(10, 120)
    for i in range(10):
        sim[i, 60 + i] = 0.8
    seg = find_segments(sim, np.arange(10.0), np.arange(120.0), 10.0, 120.0)[0]
    assert (seg.query_start, seg.query_end) == (0.0, 10.0)
    assert (seg.target_start, seg.target_end) == (60.0, 70.0)
    assert seg.score == pytest.approx(0.8)


def test_speed_change_and_missing_frames():
    sim = noise(20, 100, seed=1)
    for i in range(20):  # query at 1.5x speed: target advances 1.5 frames per query frame
        if i not in (7, 8):  # two frames lost to an overlay
            sim[i, 30 + int(i * 1.5)] = 0.7
    seg = find_segments(sim, np.arange(20.0), np.arange(100.0), 20.0, 100.0)[0]
    assert seg.query_start == 0.0 and seg.query_end == 20.0
    assert seg.target_start == 30.0 and seg.target_end == pytest.approx(30 + 19 * 1.5 + 1, abs=1.0)


def test_two_copied_parts_give_two_segments():
    sim = noise(20, 200, seed=2)
    for i in range(10):
        sim[i, 100 + i] = 0.9
        sim[10 + i, 20 + i] = 0.6
    segs = find_segments(sim, np.arange(20.0), np.arange(200.0), 20.0, 200.0)
    spans = sorted((s.query_start, s.target_start) for s in segs[:2])
    assert spans == [(0.0, 100.0), (10.0, 20.0)]


def test_nothing_for_unrelated_or_empty():
    assert find_segments(noise(10, 50), np.arange(10.0), np.arange(50.0), 10.0, 50.0) == []
    assert find_segments(np.zeros((0, 5)), np.zeros(0), np.arange(5.0), 0.0, 5.0) == []


def test_a_chain_does_not_drift_off_the_diagonal_in_a_static_scene():
    """An excerpt of a near-static target: a chain racing ahead at 2x scores a hair higher than the true
    diagonal; the drift cost keeps the real-time alignment, so the target span is not overshot."""
    sim = noise(6, 40, seed=3)
    for i in range(6):
        sim[i, 10 + i] = 0.80
        sim[i, 10 + 2 * i] = max(sim[i, 10 + 2 * i], 0.81)
    seg = find_segments(sim, np.arange(6.0), np.arange(40.0), 6.0, 40.0)[0]
    assert (seg.target_start, seg.target_end) == (10.0, 16.0)
    drifting = find_segments(sim, np.arange(6.0), np.arange(40.0), 6.0, 40.0, drift_penalty=0.0)[0]
    assert drifting.target_end == 21.0  # what the search did before: 10 -> 20 for a 6 s query


def test_a_query_covering_a_static_target_still_gets_its_segment():
    """A short excerpt of a short, static clip: every cell is high, so the median is the match level; capping
    the background still finds the (faint) diagonal instead of reporting nothing."""
    sim = np.full((6, 8), 0.90, np.float32) + noise(6, 8, seed=4) * 0.1
    for i in range(6):
        sim[i, 2 + i // 2] = 0.97  # the query (twice the frame rate) matches target frames 2-4
    ts_q, ts_t = np.arange(6) * 0.5, np.arange(8.0)
    seg = find_segments(sim, ts_q, ts_t, 3.0, 8.0)[0]
    assert (seg.target_start, seg.target_end) == (2.0, 5.0) and (seg.query_start, seg.query_end) == (0.0, 3.0)
    assert find_segments(sim, ts_q, ts_t, 3.0, 8.0, background_cap=1.0) == []  # the uncapped median: nothing
