"""Duplicate sets of a whole collection: the linkage rule, then `Engine.duplicates` and `hapvr duplicates`
on real clips (sets, representative, segments, incremental scans, deletion, a killed run resuming)."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bench import videoedit as ve
from indexer.duplicates import average_linkage
from indexer.engine import Engine
from tests.clips import ASL, BIKES, BOTTLE, BOTTLE_PREVIEW, CAR, CLASSROOM, ROOT, clip
from tests.test_cli import hapvr
from tests.test_engine import make_settings


def test_one_strong_link_does_not_chain_two_sets():
    # A-B and B-C are copies; A-C was never listed although A and C had room for it: C stays apart
    assert average_linkage([(1, 2, 0.95), (2, 3, 0.95)], saturated=set(), threshold=0.5) == [{1, 2}]
    # three sets of three copies, two of them bridged by one strong but ambiguous pair (0.95 where the sets'
    # own pairs are 0.99): single linkage would make one set of six
    pairs = [(a, b, 0.99) for group in ((1, 2, 3), (4, 5, 6), (7, 8, 9)) for a in group for b in group if a < b]
    groups = average_linkage(pairs + [(3, 4, 0.95)], saturated=set(), threshold=0.5)
    assert sorted(map(sorted, groups)) == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]


def test_a_pair_crowded_out_of_saturated_scans_is_unknown_not_zero():
    # both ends listed as many strong pairs as they could: the missing A-C pair may have been crowded out
    assert average_linkage([(1, 2, 0.95), (2, 3, 0.95)], saturated={1, 2, 3}, threshold=0.5) == [{1, 2, 3}]
    # weak pairs stay apart, whatever the saturation
    assert average_linkage([(1, 2, 0.3)], saturated={1, 2}, threshold=0.5) == []


def brighter_crop(frame: np.ndarray) -> np.ndarray:
    return np.clip(ve.crop(frame, 0.15).astype(np.float32) * 1.2 + 15, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """Real clips and an edited copy of one: two true sets ({bottle film, its GIF preview} and {bikes, its
    cropped brighter copy}) among unrelated clips."""
    out = tmp_path_factory.mktemp("dups")
    copy = ve.write_clip(ve.map_frames(ve.read_clip(clip(BIKES), max_side=480), brighter_crop), out / "bikes-copy.mp4")
    return out, [clip(BOTTLE), clip(BOTTLE_PREVIEW), clip(BIKES), copy, clip(ASL), clip(CAR), clip(CLASSROOM)]


def names(result: dict) -> list[list[str]]:
    return sorted(sorted(v["source"].rsplit("/", 1)[-1] for v in g["videos"]) for g in result["groups"])


def sets(*groups: list[str]) -> list[list[str]]:
    return sorted(sorted(g) for g in groups)


def test_duplicates_groups_real_copies_and_stays_incremental(collection, tmp_path):
    out, files = collection
    engine = Engine(make_settings(tmp_path / "data"))
    assert engine.duplicates()["groups"] == []  # an empty collection: an empty answer, not an error
    list(engine.index_many(files))
    first = engine.duplicates()
    assert names(first) == sets([BIKES, "bikes-copy.mp4"], [BOTTLE, BOTTLE_PREVIEW])
    assert first["scanned_now"] == len(files) and first["videos"] == len(files)
    bottle = next(g for g in first["groups"] if len(g["videos"]) == 2 and BOTTLE in g["videos"][0]["source"])
    assert bottle["representative"] == bottle["videos"][0]["id"]  # the 40-s film, not its 3-s preview
    (pair,) = bottle["pairs"]
    assert pair["confidence"] >= 0.9 and pair["segments"]
    # the preview is 3 s of the film: its span covers it all, the film's span is 3 s long
    preview_id = bottle["videos"][1]["id"]
    seg = pair["segments"][0]
    preview_side, film_side = ("a", "b") if pair["a"] == preview_id else ("b", "a")
    assert seg[f"{preview_side}_end"] - seg[f"{preview_side}_start"] == pytest.approx(3.0, abs=0.7)
    assert 12.0 <= seg[f"{film_side}_start"] < seg[f"{film_side}_end"] <= 23.0, seg
    assert engine.last_duplicates()["groups"] == first["groups"]

    # a new copy joins its set: only it is scanned
    car_copy = ve.write_clip(ve.map_frames(ve.read_clip(clip(CAR), max_side=480), brighter_crop), out / "car-copy.mp4")
    engine.index(car_copy)
    again = engine.duplicates()
    assert again["scanned_now"] == 1
    assert names(again) == sets([BIKES, "bikes-copy.mp4"], [BOTTLE, BOTTLE_PREVIEW], [CAR, "car-copy.mp4"])
    # a deleted video leaves its set without a rescan; a stricter threshold is a regrouping only
    engine.delete(bottle["videos"][1]["id"])
    after = engine.duplicates(min_confidence=0.9)
    assert after["scanned_now"] == 0 and names(after) == sets([BIKES, "bikes-copy.mp4"], [CAR, "car-copy.mp4"])


def test_cli_json_csv_and_a_killed_run_resumes(collection, tmp_path):
    _, files = collection
    data = tmp_path / "data"
    hapvr("index", *map(str, files), data=data, check=True)
    # killed after its first video's scan is committed: the next run scans only the others
    env = {**os.environ, "HAPVR_DATA": str(data), "HAPVR_CACHE_DIR": str(tmp_path / "cache"),
           "HAPVR_FAILPOINTS": "duplicates_scan"}
    killed = subprocess.run([sys.executable, "-m", "indexer.cli", "duplicates", "--json"], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr
    result = json.loads(hapvr("duplicates", "--json", data=data, check=True).stdout)
    assert result["scanned_now"] == len(files) - 1
    assert names(result) == sets([BIKES, "bikes-copy.mp4"], [BOTTLE, BOTTLE_PREVIEW])
    group = result["groups"][0]
    assert set(group) >= {"videos", "representative", "pairs"}
    assert set(group["videos"][0]) >= {"id", "source", "duration", "width", "height"}
    assert set(group["pairs"][0]) == {"a", "b", "confidence", "segments"}
    rows = list(csv.DictReader(io.StringIO(hapvr("duplicates", "--csv", data=data, check=True).stdout)))
    assert len(rows) == 4 and sum(r["representative"] == "True" for r in rows) == 2
    assert {r["group"] for r in rows} == {"1", "2"}
    table = hapvr("duplicates", data=data, check=True).stdout
    assert table.startswith("2 duplicate sets, 4 of 7 videos")
    bad = hapvr("duplicates", "--min-confidence", "7", data=data)
    assert bad.returncode == 2 and "a confidence is in 0..1" in bad.stderr
    assert hapvr("duplicates", data=tmp_path / "nothing").returncode != 0


def test_without_a_confidence_map_for_the_model_duplicates_says_so(tmp_path):
    from indexer.confidence import Calibration

    Calibration(model="another-model", weights=(1.0, 0.0, 0.0, 0.0), bias=0.0).save(tmp_path / "other.json")
    data = tmp_path / "data"
    hapvr("index", str(clip(CAR)), data=data, check=True)
    env_map = {"HAPVR_CONFIDENCE_MAP": str(tmp_path / "other.json")}
    proc = subprocess.run([sys.executable, "-m", "indexer.cli", "duplicates", "--data", str(data)], cwd=ROOT,
                          env={**os.environ, "HAPVR_CACHE_DIR": str(tmp_path / "cache"), **env_map},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 20 and "[no_calibration]" in proc.stderr, proc.stderr
