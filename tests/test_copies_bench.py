"""The copy benchmark's edit families are deterministic, change what they claim, and keep their ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from bench import videoedit as ve
from bench.copies import split
from bench.copies.families import FAMILIES, MULTI_SPAN_FAMILIES, make_family
from tests.clips import BIKES, BOTTLE, clip
from tests.conftest import needs_shared  # the split and the bootstrap's database are the shared clips' manifest


@pytest.fixture(scope="module")
def clips():
    a = ve.read_clip(clip(BIKES), max_side=160, fps=4)
    b = ve.read_clip(clip(BOTTLE), max_side=160, fps=4)
    return a, b


@pytest.mark.parametrize("family", FAMILIES + MULTI_SPAN_FAMILIES)
def test_family_is_deterministic_under_its_seed(clips, family):
    original, other = clips
    first = make_family(family, original, np.random.default_rng(11), other)
    again = make_family(family, original, np.random.default_rng(11), other)
    assert len(first.clip.frames) == len(again.clip.frames) > 0
    assert all(np.array_equal(x, y) for x, y in zip(first.clip.frames, again.clip.frames))
    assert first.truth == again.truth and first.bitrate == again.bitrate and first.spans == again.spans


@pytest.mark.parametrize("family", FAMILIES + MULTI_SPAN_FAMILIES)
def test_the_copied_spans_show_the_original(clips, family):
    """Every family knows its copied spans, on the query's and the original's timelines: a whole-clip edit
    maps the whole query onto the whole original; where frames are copied unchanged (an excerpt, an
    insertion, a compilation) the query's frame in the middle of each span is the original's frame there."""
    original, other = clips
    query = make_family(family, original, np.random.default_rng(5), other)
    assert query.spans
    for span in query.spans:
        assert 0 <= span["query_start"] < span["query_end"] <= query.clip.duration + 1e-3
        assert 0 <= span["target_start"] < span["target_end"] <= original.duration + 1e-3
    if family in ("excerpt", "insertion", "compilation"):
        for span in query.spans:
            q = (span["query_start"] + span["query_end"]) / 2
            t = q - span["query_start"] + span["target_start"]
            assert np.array_equal(query.clip.frames[int(q * query.clip.fps)], original.frames[int(t * original.fps)])
    else:
        (span,) = query.spans
        assert (span["query_start"], span["target_start"], span["target_end"]) == (0.0, 0.0, round(original.duration, 3))
        assert span["query_end"] == pytest.approx(query.clip.duration, abs=1e-3)
    if family == "compilation":  # two excerpts in swapped order
        first, second = query.spans
        assert len(query.spans) == 2 and first["target_start"] >= second["target_end"]


def test_a_source_with_frame_gaps_keeps_its_duration_when_resampled(tmp_path):
    """A clip at 2 frames per second read at 10: every output tick shows the first source frame at or after
    it, so the clip keeps its duration (to within its last frame) instead of being sped up five times."""
    frames = [np.full((32, 32, 3), 40 * i, np.uint8) for i in range(6)]
    path = ve.write_clip(ve.Clip(frames, 2.0), tmp_path / "slow.mp4")
    read = ve.read_clip(path, fps=10)
    assert read.duration == pytest.approx(3.0, abs=0.5)
    assert abs(int(read.frames[12].mean()) - 40 * 3) < 8  # the 1.2 s tick: the source frame at 1.5 s


def test_families_do_what_they_say(clips):
    original, other = clips
    n = len(original.frames)
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    assert np.array_equal(make_family("hflip", original, rng(), other).clip.frames[0], original.frames[0][:, ::-1])
    assert len(make_family("speed_1.5", original, rng(), other).clip.frames) == int(n / 1.5)
    assert len(make_family("speed_0.75", original, rng(), other).clip.frames) == int(n / 0.75)
    excerpt = make_family("excerpt", original, rng(), other)
    t = excerpt.truth
    assert 0.3 * original.duration - 0.5 <= t["target_end"] - t["target_start"] <= 0.5 * original.duration + 0.5
    inserted = make_family("insertion", original, rng(), other)
    assert inserted.truth["query_end"] - inserted.truth["query_start"] == pytest.approx(original.duration)
    assert inserted.clip.duration == pytest.approx(original.duration + 20, abs=0.5)
    gray = make_family("grayscale", original, rng(), other).clip.frames[0]
    assert np.array_equal(gray[..., 0], gray[..., 1])


@needs_shared
def test_split_is_disjoint_and_complete():
    train, test = set(split.train_split()), set(split.test_split())
    assert not train & test
    assert train | test == set(split.all_clips())
    assert all(name in test for group in split.NATURAL_GROUPS.values() for name in group)
    assert all(name.startswith("intel__asl_") is False for name in test)


@needs_shared
def test_validation_folds_hold_out_train_clips_only():
    """Choices are validated on train clips a fold network never saw, never on test clips; the two
    folds hold out different clips."""
    for fold in range(split.FOLDS):
        held, trained = set(split.validation_originals(fold)), set(split.fold_train(fold))
        assert held and trained and not held & trained
        assert held | trained == set(split.train_split())
        assert not held & set(split.test_split())
    assert not set(split.validation_originals(0)) & set(split.validation_originals(1))
    for fold in range(split.FOLDS):  # queried like the test: varied content, none from the ASL room
        queried = split.validation_query_originals(fold)
        assert len(queried) >= 6 and set(queried) < set(split.validation_originals(fold))
        assert not any(name.startswith("intel__asl") for name in queried)
    with pytest.raises(ValueError):
        split.validation_originals(split.FOLDS)


def test_mix_choice_takes_the_largest_gain_on_both_measures_within_the_family_limit():
    from bench.copies.mix import choose, mean_over_folds, mixed, parse_folds

    rows = {("comparator", 0.0): {"mAP": 0.99, "uAP": 0.99, "worst": -0.05},  # best, but one family lost 0.05
            ("comparator", 0.3): {"mAP": 0.98, "uAP": 0.955, "worst": 0.0},  # best sum, but it costs μAP
            ("comparator", 0.5): {"mAP": 0.97, "uAP": 0.965, "worst": -0.01},  # gains 0.01 and 0.005
            ("attention", 0.0): {"mAP": 0.965, "uAP": 0.98, "worst": 0.0},  # gains 0.005 and 0.02
            ("comparator", 1.0): {"mAP": 0.96, "uAP": 0.96, "worst": 0.0}}
    assert choose(rows) == ("comparator", 0.5)  # ties with attention on the smaller gain: the paper's head
    rows[("attention", 0.0)]["mAP"] = 0.975
    assert choose(rows) == ("attention", 0.0)
    for key in [("comparator", 0.5), ("attention", 0.0)]:
        rows[key]["uAP"] = 0.959
    assert choose(rows) == ("comparator", 1.0)  # nothing gains on both: plain Chamfer
    learned, chamfer = {"q": {"a": 1.0, "b": 0.0}}, {"q": {"a": 0.0, "b": 1.0}}
    assert mixed(learned, chamfer, 0.25) == {"q": {"a": 0.75, "b": 0.25}}
    folds = [{("attention", 0.0): {"mAP": 0.9, "uAP": 0.8, "worst": -0.01, "family": "hard"}},
             {("attention", 0.0): {"mAP": 0.7, "uAP": 0.6, "worst": -0.03, "family": "pip"}}]
    mean = mean_over_folds(folds)[("attention", 0.0)]
    assert mean["mAP"] == pytest.approx(0.8) and mean["uAP"] == pytest.approx(0.7)
    assert (mean["worst"], mean["family"]) == (-0.03, "pip")
    # a second seed of fold 1 is averaged with the first before the folds are: its mean loss, not its worst
    folds.append({("attention", 0.0): {"mAP": 0.9, "uAP": 0.8, "worst": -0.01, "family": "crop_25"}})
    mean = mean_over_folds(folds, [0, 1, 1])[("attention", 0.0)]
    assert mean["mAP"] == pytest.approx((0.9 + 0.8) / 2) and mean["uAP"] == pytest.approx((0.8 + 0.7) / 2)
    assert mean["worst"] == pytest.approx(-0.02) and mean["family"] == "pip"
    assert parse_folds(["a.pt", "b.pt"]) == [(0, "a.pt"), (1, "b.pt")]
    assert parse_folds(["1:b.pt", "0:a.pt", "1:c.pt"]) == [(1, "b.pt"), (0, "a.pt"), (1, "c.pt")]
    with pytest.raises(ValueError):
        parse_folds(["2:x.pt"])


@needs_shared
def test_bootstrap_gain_draws_whole_originals_and_brackets_the_observed_gain():
    from bench.copies.floor import PairedBootstrap, bootstrap_gain, parse_setting

    db = split.all_clips()
    a, b, c = db[:3]
    queries = [{"path": f"q{k}", "original": o, "relevant": [o]} for k, o in enumerate([a, a, b, c])]
    base = {"q0": {a: 0.5, b: 0.6}, "q1": {a: 0.9, b: 0.1}, "q2": {b: 0.9, a: 0.1}, "q3": {c: 0.2, a: 0.3}}
    better = {**base, "q0": {a: 0.7, b: 0.6}}  # only original a's first copy improves
    same = bootstrap_gain(base, base, queries, draws=50)
    assert same == {"mAP": (0.0, 0.0, 0.0), "uAP": (0.0, 0.0, 0.0)}
    gain = bootstrap_gain(better, base, queries, draws=200, seed=1)
    assert gain["mAP"][0] == pytest.approx((1.0 - 0.5) / 4)  # q0's AP goes from 1/2 to 1, one of four queries
    for observed, low, high in gain.values():
        assert low <= observed <= high and low >= 0.0 and high > 0.0
    assert gain == bootstrap_gain(better, base, queries, draws=200, seed=1)  # deterministic under a seed
    shared = PairedBootstrap(base, queries, draws=200, seed=1)  # one set of draws for several checkpoints
    assert shared.gain(better) == gain and shared.gain(base)["uAP"] == (0.0, 0.0, 0.0)
    assert parse_setting("x.pt") == ("x.pt", {})
    assert parse_setting("x.pt@0.5") == ("x.pt", {"chamfer_mix": 0.5})
    assert parse_setting("x.pt@attention:0.1") == ("x.pt", {"chamfer_mix": 0.1, "comparator": False})
    with pytest.raises(ValueError):
        parse_setting("x.pt@head:0.1")


def test_floor_report_counts_the_negatives_that_outrank_each_positive():
    """The μAP diagnostic: a positive is charged every negative of any query scored at or above it."""
    from bench.copies.floor import floor_report

    queries = [{"path": "q1", "family": "pip", "relevant": ["a"]}, {"path": "q2", "family": "hard", "relevant": ["b"]}]
    scores = {"q1": {"a": 0.30, "b": 0.10, "c": 0.50}, "q2": {"a": 0.20, "b": 0.60, "c": 0.30}}
    lines = floor_report(scores, queries, lowest=2)
    assert "2 positives, 4 negatives" in lines[0]
    # q1's positive (0.30) is outranked by q1's c (0.50) and ties q2's c (0.30); q2's positive leads all
    assert lines[1].strip() == "positive +0.300 (pip): 2 negatives at or above"
    assert lines[2].strip() == "positive +0.600 (hard): 0 negatives at or above"
