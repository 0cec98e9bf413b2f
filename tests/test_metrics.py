"""The evaluator: metrics against hand-computed values and sklearn, readers on files in the official formats."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from bench.datasets import EVVE, FIVR, SVD, read_hdf5_features, step_average_precision
from bench.metrics import (average_precision, evve_average_precision, mean_average_precision,
                           micro_average_precision, recall_at_k)


def test_average_precision_by_hand():
    # ranking: + - + - ; 2 relevant in the database
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 2) == pytest.approx((1 / 1 + 2 / 3) / 2)
    # a third relevant video never retrieved counts as 0
    assert average_precision([1, 0, 1, 0], [0.9, 0.8, 0.7, 0.1], 3) == pytest.approx((1 + 2 / 3) / 3)


def test_agrees_with_sklearn_when_all_positives_are_ranked():
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 50)
        y[0] = 1
        s = rng.random(50)  # no ties
        assert average_precision(y, s, int(y.sum())) == pytest.approx(sklearn.average_precision_score(y, s))
        assert step_average_precision(list(y), list(s)) == pytest.approx(sklearn.average_precision_score(y, s))
    # with ties sklearn groups them; our step variant does too
    y, s = [1, 0, 1, 0, 1], [0.5, 0.5, 0.3, 0.3, 0.1]
    assert step_average_precision(y, s) == pytest.approx(sklearn.average_precision_score(y, s))


def test_map_excludes_the_query_and_uap_pools():
    scores = {"q1": {"q1": 1.0, "a": 0.9, "b": 0.5, "c": 0.2},
              "q2": {"a": 0.3, "b": 0.8, "c": 0.7, "q2": 1.0}}
    relevant = {"q1": {"a", "q1"}, "q2": {"c"}}
    db = {"q1", "q2", "a", "b", "c"}
    ap1 = 1.0  # a first (q1 itself excluded)
    ap2 = 1 / 2  # b then c
    assert mean_average_precision(scores, relevant, db) == pytest.approx((ap1 + ap2) / 2)
    # pooled: a(.9,+) b(.8,-) c(.7,+) b(.5,-) a(.3,-) c(.2,-)  [q1->q2 and q2->q1 pairs count as negatives]
    pooled = average_precision([1, 0, 1, 0, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.5, 0.3, 0.2, -1, -1], 2)
    scores["q1"]["q2"] = -1
    scores["q2"]["q1"] = -1
    assert micro_average_precision(scores, relevant, db) == pytest.approx(pooled)
    assert recall_at_k(scores, relevant, db, 1) == pytest.approx(0.5)
    assert recall_at_k(scores, relevant, db, 10) == pytest.approx(1.0)


def test_evve_trapezoidal_ap_by_hand():
    # positives at ranks 0 and 2, 2 positives: (1 + 1)/2/2 + (1/2 + 2/3)/2/2
    assert evve_average_precision([0, 2], 2) == pytest.approx(0.5 + (0.5 + 2 / 3) / 4)
    assert evve_average_precision([], 3) == 0.0


def test_fivr_reader_and_protocol(tmp_path):
    data = {
        "annotation": {"q1": {"ND": ["v1"], "DS": ["v2"], "CS": ["v3"], "IS": ["v4"]},
                       "q2": {"ND": ["v5"], "IS": ["v1"]}},
        "5k": {"queries": ["q1", "q2"], "database": ["v1", "v2", "v3", "v4", "v5", "v6"]},
    }
    path = tmp_path / "fivr.pickle"
    path.write_bytes(pickle.dumps(data))
    easy = tmp_path / "easy.txt"
    easy.write_text("v1\n")
    fivr = FIVR(path, "5k", easy)
    scores = {"q1": {"v1": 0.9, "v2": 0.8, "v3": 0.1, "v4": 0.7, "v5": 0.2, "v6": 0.3},
              "q2": {"v1": 0.6, "v2": 0.1, "v3": 0.1, "v4": 0.1, "v5": 0.95, "v6": 0.5}}
    r = fivr.evaluate(scores)
    assert r["DSVR"] == pytest.approx((1.0 + 1.0) / 2)  # q1: v1, v2 on top; q2: v5 on top
    # ISVR q1: v1 v2 v4 at ranks 1,2,3, v3 at rank 6 -> (1 + 1 + 1 + 4/6) / 4; q2: v5, v1 at ranks 1,2
    assert r["ISVR"] == pytest.approx(((3 + 4 / 6) / 4 + 1.0) / 2)
    assert r["DSVR_h"] == pytest.approx((1.0 + 1.0) / 2)  # without v1, q1 still has v2 first
    assert set(r) >= {"DSVD", "CSVD", "ISVD", "CSVR", "ISVD_h"}


def test_evve_reader_and_protocol(tmp_path):
    data = {"annotation": {"e1": ({"q1"}, {"a", "b"}, set()), "e2": ({"q2"}, {"c"}, set())},
            "queries": ["q1", "q2"], "database": ["a", "b", "c", "d"]}
    path = tmp_path / "evve.pickle"
    path.write_bytes(pickle.dumps(data))
    scores = {"q1": {"a": 0.9, "b": 0.1, "c": 0.5, "d": 0.4}, "q2": {"a": 0.1, "b": 0.2, "c": 0.8, "d": 0.3}}
    r = EVVE(path).evaluate(scores)
    q1 = evve_average_precision([0, 3], 2)
    assert r["EVVE_mAP"] == pytest.approx((q1 + 1.0) / 2)


def test_svd_reader_and_protocol(tmp_path):
    gt = tmp_path / "test_groundtruth"
    gt.write_text("q1 c1 1\nq1 c2 0\nq2 c3 1\n")
    unl = tmp_path / "unlabeled-data-id"
    unl.write_text("u1\nu2\n")
    svd = SVD(gt, unl)
    scores = {"q1": {"c1": 0.9, "c2": 0.95, "c3": 0.99, "u1": 0.1, "u2": 0.2},  # c3 is not q1's: ignored
              "q2": {"c1": 0.0, "c2": 0.0, "c3": 0.5, "u1": 0.6, "u2": 0.1}}
    r = svd.evaluate(scores)
    assert r["mAP"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_hdf5_reader_tiles_short_videos(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "features.hdf5"
    with h5py.File(path, "w") as f:
        f["long"] = np.ones((10, 9, 512), np.float32)
        f["short"] = np.ones((3, 9, 512), np.float32)
        f["flat"] = np.ones((2, 512), np.float32)
    got = dict(read_hdf5_features(path, ["long", "short", "flat", "missing"]))
    assert got["long"].shape == (10, 9, 512)
    assert got["short"].shape == (12, 9, 512)  # doubled until >= 8, as the official generator
    assert got["flat"].shape == (8, 1, 512)
    assert "missing" not in got
