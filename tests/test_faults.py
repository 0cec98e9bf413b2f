"""Faults on real processes: redis-server restarted mid-job, the API killed mid-upload, a worker SIGKILLed
in each stage of a job (indexer/failpoints.py), two workers racing on one file. Each ends with one video
per file, no orphan rows or temporary files, and the job done.

The disk filling up is tests/test_disk_full.py; a worker killed at a random moment is in test_service.py.
"""
from __future__ import annotations

import hashlib
import shutil
import signal
import socket
import sqlite3
import time
from pathlib import Path

import pytest

from bench.service_procs import Proc, RedisServer, free_port, service_env, start_api, wait_for, wait_job
from tests.clips import BIKES, CAR, CLASSROOM, PEOPLE, clip, long_clip, padded, variant

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


@pytest.fixture
def stack(tmp_path):
    """A private Redis (AOF on, fsync always, as docs/SERVICE.md prescribes), one API, no worker yet;
    jobs held by a silent worker are re-delivered after 3 s."""
    redis = RedisServer(tmp_path / "redis").start()
    env = service_env(tmp_path / "data", free_port(), redis.url, HAPVR_JOB_VISIBILITY_S="3",
                      HAPVR_LOG_LEVEL="INFO")
    api, client = start_api(env, tmp_path / "api.log")
    state = {"root": tmp_path, "redis": redis, "env": env, "api": api, "client": client, "procs": [api]}

    def worker(name: str, **extra: str) -> Proc:
        proc = Proc("service.worker", {**env, **extra}, tmp_path / f"{name}.log").start()
        state["procs"].append(proc)
        return proc

    state["worker"] = worker
    yield state
    state["client"].close()
    for proc in reversed(state["procs"]):
        proc.kill(signal.SIGTERM)
    redis.stop()


def upload(client, path: Path):
    r = client.post("/index", files=[("files", (path.name, path.read_bytes(), "video/mp4"))])
    assert r.status_code == 202, r.text
    return r.json()["jobs"][0]["job_id"]


def consistent(data: Path) -> dict[str, int]:
    """The store's invariants: every row has its feature file, no temporary file is left, no sha256 twice.
    Returns sha256 -> rows."""
    with sqlite3.connect(data / "store.sqlite") as conn:
        rows = conn.execute("SELECT id, sha256 FROM videos").fetchall()
    for video_id, _ in rows:
        assert (data / "features" / f"{video_id}.npy").is_file(), video_id
    assert not list((data / "features").glob("*.tmp")), "a temporary feature file was left"
    counts: dict[str, int] = {}
    for _, sha in rows:
        counts[sha] = counts.get(sha, 0) + 1
    assert all(n == 1 for n in counts.values()), counts
    return counts


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_redis_restarted_mid_job_loses_no_job(stack, made):
    client = stack["client"]
    stack["worker"]("w0")
    wait_for(lambda: client.get("/readyz").status_code == 200, 120, "worker not ready")
    path = long_clip(made)  # 160 s of video: the job runs for seconds
    job_id = upload(client, path)
    queued = upload(client, clip(CAR))  # and one still waiting in the stream
    wait_for(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "running", 60, "job never started")
    stack["redis"].stop(signal.SIGKILL)  # a crash, not a clean shutdown: only the AOF survives
    time.sleep(3)
    stack["redis"].start()
    for jid in (job_id, queued):
        job = wait_job(client, jid, timeout=240)
        assert job["state"] == "done", job
    counts = consistent(Path(stack["env"]["HAPVR_DATA"]))
    assert counts.get(sha(path)) == 1 and counts.get(sha(clip(CAR))) == 1


def test_api_killed_mid_upload_leaves_no_video_and_no_temp_file(stack):
    """The API dies with half an upload received: no job or video exists for it after a restart, and no
    file of it is left, neither in the uploads folder nor in the API's temporary folder (the multipart
    parser spools bodies there), and the same file uploads normally afterwards."""
    env = {**stack["env"], "TMPDIR": str(stack["root"] / "api-tmp")}
    (stack["root"] / "api-tmp").mkdir()
    stack["api"].kill(signal.SIGTERM)
    stack["api"], client = start_api(env, stack["root"] / "api-tmp.log")
    stack["procs"].append(stack["api"])
    stack["client"].close()
    port = int(env["HAPVR_PORT"])
    uploads = Path(env["HAPVR_DATA"]) / "uploads"
    path = padded(BIKES, 3 * 1024 * 1024, stack["root"])  # the clip, then zeros: 3 MB that sniff as video
    body = path.read_bytes()
    assert len(body) > 1024 * 1024  # over the parser's in-memory spool: half of it is on disk when it dies
    boundary = "faultboundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"b.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    total = len(head) + len(body) + len(f"\r\n--{boundary}--\r\n")
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"POST /index HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary={boundary}\r\n"
                     f"Content-Length: {total}\r\n\r\n".encode() + head + body[: len(body) // 2])
        time.sleep(2)  # the API has read what was sent and waits for the rest
        stack["api"].kill(signal.SIGKILL)
    stack["api"], stack["client"] = start_api(env, stack["root"] / "api2.log")
    stack["procs"].append(stack["api"])
    client.close()
    wait_for(lambda: not uploads.is_dir() or not list(uploads.iterdir()), 90, "the dead upload left a file")
    assert not list((stack["root"] / "api-tmp").iterdir())
    assert stack["client"].get("/videos").json()["total"] == 0
    stack["worker"]("w0")
    wait_for(lambda: stack["client"].get("/readyz").status_code == 200, 120, "worker not ready")
    assert wait_job(stack["client"], upload(stack["client"], path))["state"] == "done"
    assert consistent(Path(env["HAPVR_DATA"])) == {sha(path): 1}


@pytest.mark.parametrize("point", ["decode", "embed", "commit", "index_save"])
def test_worker_sigkilled_in_each_stage_indexes_the_video_once(stack, made, point):
    """A worker armed to SIGKILL itself at `point` dies there; a healthy worker then finishes the job
    (re-delivered after the visibility timeout) and the store holds the video once, whole."""
    client, data = stack["client"], Path(stack["env"]["HAPVR_DATA"])
    path = variant(CLASSROOM, 7, made)
    doomed = stack["worker"]("doomed", HAPVR_FAILPOINTS=point)
    wait_for(lambda: client.get("/readyz").status_code == 200, 120, "worker not ready")
    job_id = upload(client, path)
    if point == "index_save":  # the coarse index is saved at shutdown (and once a minute): job done, then stop
        assert wait_job(client, job_id)["state"] == "done"
        doomed.proc.send_signal(signal.SIGTERM)
    wait_for(lambda: doomed.proc.poll() is not None, 120, f"the worker never reached {point}")
    assert doomed.proc.returncode == -signal.SIGKILL
    if point == "commit":  # killed between the feature file and its row: a file no row names
        assert len(list((data / "features").glob("*.npy"))) == 1
    if point == "index_save":
        assert list((data / "faiss").glob(".tmp-*.index"))  # the new index never took the old one's place
    stack["worker"]("healthy")
    job = wait_job(client, job_id, timeout=240)
    assert job["state"] == "done", job
    assert consistent(data) == {sha(path): 1}
    if point == "commit":  # the dead attempt's file stays until it is 10 minutes old (a live writer's may be
        # younger), then the next worker start removes it
        from indexer.store import Store

        assert Store.open_existing(data).remove_orphans(min_age_s=0) == 1
        assert len(list((data / "features").glob("*.npy"))) == 1
    q = client.post("/query", files={"file": ("q.mp4", path.read_bytes(), "video/mp4")}, data={"top_k": "1"})
    assert q.status_code == 200 and q.json()["results"][0]["id"] == job["result"]["video_id"], q.text


def test_a_duplicates_job_survives_its_worker_being_killed_mid_scan(stack, made):
    """POST /duplicates on a worker that SIGKILLs itself after its first video's scan is committed: a
    healthy worker gets the job again, scans only the videos left, and GET /duplicates serves the sets."""
    client, data = stack["client"], Path(stack["env"]["HAPVR_DATA"])
    healthy = stack["worker"]("indexer")
    wait_for(lambda: client.get("/readyz").status_code == 200, 120, "worker not ready")
    files = [clip(BIKES), variant(BIKES, 8, made), clip(CLASSROOM), clip(CAR)]
    for path in files:
        assert wait_job(client, upload(client, path))["state"] == "done"
    assert client.get("/duplicates").status_code == 404  # no grouping has finished yet
    healthy.kill(signal.SIGTERM)
    doomed = stack["worker"]("doomed", HAPVR_FAILPOINTS="duplicates_scan")
    r = client.post("/duplicates", json={"min_confidence": 0.5})
    assert r.status_code == 202, r.text
    wait_for(lambda: doomed.proc.poll() is not None, 120, "the worker never reached duplicates_scan")
    assert doomed.proc.returncode == -signal.SIGKILL
    with sqlite3.connect(data / "store.sqlite") as conn:
        assert conn.execute("SELECT COUNT(*) FROM pair_scans").fetchone()[0] == 1
    stack["worker"]("healthy")
    job = wait_job(client, r.json()["job_id"], timeout=240)
    assert job["state"] == "done" and job["attempts"] >= 2, job
    assert job["result"]["scanned_now"] == len(files) - 1 and job["result"]["groups"] == 1
    sets = client.get("/duplicates").json()
    (group,) = sets["groups"]
    assert sorted(v["source"] for v in group["videos"]) == sorted([BIKES, files[1].name])
    assert group["pairs"][0]["confidence"] >= 0.5 and group["pairs"][0]["segments"]
    bad = client.post("/duplicates", json={"min_confidence": 3})
    assert bad.status_code == 422 and "min_confidence" in bad.json()["error"]["message"]


def test_two_workers_racing_on_one_file_make_one_video(stack, made, tmp_path):
    """The same bytes under two names, imported at once (server-side imports are not deduplicated by the
    API: each gets a job) and taken by two workers: the store keeps one video, both jobs name it."""
    imports = tmp_path / "imports"
    imports.mkdir()
    source = variant(PEOPLE, 3, made)
    for name in ("a.mp4", "b.mp4"):
        shutil.copy(source, imports / name)
    env = {**stack["env"], "HAPVR_IMPORT_ROOT": str(imports)}
    stack["api"].kill(signal.SIGTERM)
    stack["api"], client = start_api(env, stack["root"] / "api-import.log")
    stack["procs"].append(stack["api"])
    stack["client"].close()
    stack["client"] = client
    for name in ("w1", "w2"):
        stack["worker"](name, HAPVR_IMPORT_ROOT=str(imports), HAPVR_WORKER_JOBS="1")
    for name in ("w1", "w2"):
        wait_for(lambda: "ready" in (stack["root"] / f"{name}.log").read_text(), 120, f"{name} not ready")
    r = client.post("/index", json={"files": [{"path": "a.mp4"}, {"path": "b.mp4"}]})
    assert r.status_code == 202, r.text
    jobs = [wait_job(client, j["job_id"]) for j in r.json()["jobs"]]
    assert all(j["state"] == "done" for j in jobs), jobs
    assert jobs[0]["result"]["video_id"] == jobs[1]["result"]["video_id"]
    assert sorted(j["result"]["created"] for j in jobs) == [False, True]
    assert consistent(Path(env["HAPVR_DATA"])) == {sha(source): 1}
    for name in ("w1", "w2"):  # each worker took one of the two jobs: they did race
        assert "job " in (stack["root"] / f"{name}.log").read_text(), name
