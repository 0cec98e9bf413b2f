"""Segment localisation on similarity matrices with known answers (real-video cases: tests/test_engine.py)."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.segments import NO_ALIGNED_RUN, NO_CONTRAST, NO_FRAMES, align, find_segments, span_seconds


def noise(tq: int, tt: int, seed: int = 0, high: float = 0.15) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.0, high, size=(tq, tt)).astype(np.float32)


def spans(segments) -> list[tuple[float, float, float, float]]:
    return sorted((s.query_start, s.query_end, s.target_start, s.target_end) for s in segments)


def close(found, expected, tol: float = 0.5) -> bool:
    """Spans equal within `tol` seconds: with one frame per second a boundary between two samples is known
    to half a step."""
    return len(found) == len(expected) and all(abs(a - b) <= tol for f, e in zip(found, expected)
                                               for a, b in zip(f, e))


def test_a_span_reaches_half_way_to_the_neighbouring_samples_and_to_the_ends():
    ts = np.array([0.0, 1.0, 2.0, 3.0, 5.0])  # a blank frame at 4 s was left out
    assert span_seconds(ts, 1, 2, 5.5) == (0.5, 2.5)  # half way to the samples either side
    assert span_seconds(ts, 0, 3, 5.5) == (0.0, 3.5)  # from the start; the blank 4 s sample: half a step
    assert span_seconds(ts, 4, 4, 5.5) == (4.5, 5.5)  # the last sample: to the end, within a step of it
    assert span_seconds(np.array([2.0, 3.0]), 0, 1, 8.0) == (1.5, 3.5)  # blank opening and ending left out


def test_diagonal_excerpt():
    sim = noise(10, 120)
    for i in range(10):
        sim[i, 60 + i] = 0.8
    (seg,) = find_segments(sim, np.arange(10.0), np.arange(120.0), 10.0, 120.0)
    assert spans([seg]) == [(0.0, 10.0, 60.0, 70.0)]
    assert seg.score == pytest.approx(0.8)


def test_speed_change_and_missing_frames():
    sim = noise(20, 100, seed=1)
    for i in range(20):  # query at 1.5x speed: target advances 1.5 frames per query frame
        if i not in (7, 8):  # two frames lost to an overlay
            sim[i, 30 + int(i * 1.5)] = 0.7
    seg = find_segments(sim, np.arange(20.0), np.arange(100.0), 20.0, 100.0)[0]
    assert (seg.query_start, seg.query_end) == (0.0, 20.0)
    assert seg.target_start == pytest.approx(30.0, abs=0.5) and seg.target_end == pytest.approx(60.0, abs=1.0)


def test_two_copied_parts_give_two_segments():
    """A compilation: two excerpts of one target in swapped order."""
    sim = noise(20, 200, seed=2)
    for i in range(10):
        sim[i, 100 + i] = 0.9
        sim[10 + i, 20 + i] = 0.6
    segs = find_segments(sim, np.arange(20.0), np.arange(200.0), 20.0, 200.0)
    assert close(spans(segs), [(0.0, 10.0, 100.0, 110.0), (10.0, 20.0, 20.0, 30.0)])
    assert segs[0].target_start == pytest.approx(100.0, abs=0.5)  # the stronger copy first


def test_a_weak_but_consistent_diagonal_is_found():
    """A rotated or re-framed copy: its frame similarities barely clear the background, and a third of its
    rows have a stronger spurious match elsewhere, but they line up; a level set between background and
    peak would have dropped it."""
    rng = np.random.default_rng(5)
    sim = noise(30, 60, seed=5, high=0.2)
    for i in range(30):
        sim[i, 15 + i] = 0.28
        if i % 3 == 0:
            sim[i, int(rng.integers(60))] = 0.6  # a spike off the line
    seg = find_segments(sim, np.arange(30.0), np.arange(60.0), 30.0, 60.0)[0]
    assert close(spans([seg]), [(0.0, 30.0, 15.0, 45.0)])


def test_nothing_for_unrelated_or_empty_and_the_reason_says_why():
    for seed in range(5):
        result = align(noise(10, 50, seed=seed), np.arange(10.0), np.arange(50.0), 10.0, 50.0)
        assert result.segments == [] and result.reason in (NO_CONTRAST, NO_ALIGNED_RUN)
    assert align(np.zeros((0, 5)), np.zeros(0), np.arange(5.0), 0.0, 5.0).reason == NO_FRAMES
    flat = align(np.full((6, 6), 0.05, np.float32), np.arange(6.0), np.arange(6.0), 6.0, 6.0)
    assert flat.segments == [] and flat.reason == NO_CONTRAST


def test_a_query_covering_a_static_target_still_gets_its_segment():
    """A short excerpt of a short, static clip: every cell is high, so the median is the match level; the
    capped background still finds the (faint) diagonal instead of reporting nothing."""
    sim = np.full((6, 8), 0.90, np.float32) + noise(6, 8, seed=4) * 0.1
    for i in range(6):
        sim[i, 2 + i // 2] = 0.97  # the query (twice the frame rate) matches target frames 2-4
    ts_q, ts_t = np.arange(6) * 0.5, np.arange(8.0)
    seg = find_segments(sim, ts_q, ts_t, 3.0, 8.0)[0]
    assert close(spans([seg]), [(0.0, 3.0, 2.0, 5.0)])


def test_a_frame_that_matches_better_elsewhere_ends_the_run():
    """Two copied parts of a static scene next to each other: along the first line the second part still
    scores above the background, but its frames match their own line better, so they are not swallowed."""
    sim = np.full((20, 60), 0.3, np.float32) + noise(20, 60, seed=6) * 0.1
    for i in range(10):
        sim[i, 30 + i] = 0.9
        sim[10 + i, 5 + i] = 0.9
        sim[10 + i, 40 + i] = 0.5  # the first line, continued: similar, but not the copy
    segs = find_segments(sim, np.arange(20.0), np.arange(60.0), 20.0, 60.0)
    assert close(spans(segs)[:2], [(0.0, 10.0, 30.0, 40.0), (10.0, 20.0, 5.0, 15.0)])


def test_no_segment_maps_a_long_query_span_onto_a_second_of_target():
    """One target frame that resembles every query frame (a title card, a static shot): the lines have
    bounded speeds, so no segment squeezes the query onto that one second."""
    sim = noise(20, 40, seed=7)
    sim[:, 12] = 0.8
    for seg in find_segments(sim, np.arange(20.0), np.arange(40.0), 20.0, 40.0):
        query_span, target_span = seg.query_end - seg.query_start, seg.target_end - seg.target_start
        assert query_span <= 2.0 * target_span + 1.0, seg
