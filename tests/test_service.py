"""The service end to end with real parts: redis-server, uvicorn API processes, worker processes, httpx."""
from __future__ import annotations

import concurrent.futures as cf
import hashlib
import shutil
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.clips import ASL, BIKES, BOTTLE, CAR, CLASSROOM, PEOPLE, SHORT, clip, faststart, long_clip, padded, variant
from bench.service_procs import Proc, RedisServer, free_port, service_env, start_api, wait_for, wait_job
from tests.videos import write_audio_only, write_png

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A private Redis, one API and one worker sharing a data directory."""
    root = tmp_path_factory.mktemp("svc")
    redis = RedisServer(root / "redis").start()
    env = service_env(root / "data", free_port(), redis.url, HAPVR_MAX_UPLOAD_BYTES=str(6 * 1024 * 1024))
    api, client = start_api(env, root / "api.log")
    workers = [Proc("service.worker", env, root / "worker0.log").start()]
    wait_for(lambda: client.get("/readyz").status_code == 200, 120, "no worker became ready")
    state = {"root": root, "redis": redis, "env": env, "api": api, "client": client, "workers": workers}
    yield state
    # tests replace the API, its client and workers (restarts): stop the ones running now, not the first ones
    state["client"].close()
    for w in state["workers"]:
        w.kill(signal.SIGTERM)
    state["api"].kill(signal.SIGTERM)
    redis.stop()


def upload(client, *paths: Path, headers: dict | None = None, **fields):
    files = [("files", (p.name, p.read_bytes(), "video/mp4")) for p in paths]
    return client.post("/index", files=files, data=fields, headers=headers)


def count_videos(stack) -> int:
    return stack["client"].get("/videos").json()["total"]


def test_upload_index_then_query_finds_source_with_segments(stack):
    client = stack["client"]
    r = upload(client, clip(CAR), clip(BIKES), clip(ASL))
    assert r.status_code == 202, r.text
    jobs = r.json()["jobs"]
    assert [j["filename"] for j in jobs] == [CAR, BIKES, ASL]
    for j in jobs:
        job = wait_job(client, j["job_id"])
        assert job["state"] == "done", job
        assert job["result"]["video_id"] and job["progress"] == 100.0
    q = client.post("/query", files={"file": ("q.mp4", clip(CAR).read_bytes(), "video/mp4")},
                    data={"top_k": "2"})
    assert q.status_code == 200, q.text
    result = q.json()
    assert result["results"][0]["source"] == CAR
    assert result["results"][0]["segments"] and len(result["results"]) == 2
    # the same bytes: an exact duplicate; the unrelated clip is improbable
    assert result["results"][0]["exact_duplicate"] is True and result["results"][0]["confidence"] == 1.0
    assert result["results"][1]["confidence"] < 0.1
    sure = client.post("/query", files={"file": ("q.mp4", clip(CAR).read_bytes(), "video/mp4")},
                       data={"min_confidence": "0.5"})
    assert [m["source"] for m in sure.json()["results"]] == [CAR]
    # query by an indexed video's id, no upload
    vid = jobs[1]
    video_id = client.get(f"/jobs/{vid['job_id']}").json()["result"]["video_id"]
    by_id = client.post("/query", json={"video_id": video_id, "top_k": 3})
    assert by_id.status_code == 200 and video_id not in [m["id"] for m in by_id.json()["results"]]
    # async mode
    a = client.post("/query?async=true", files={"file": ("q.mp4", clip(BIKES).read_bytes())})
    assert a.status_code == 202
    done = wait_job(client, a.json()["job_id"])
    assert done["result"]["results"][0]["source"] == BIKES


def test_reupload_and_idempotency_key_make_no_duplicates(stack, made):
    client = stack["client"]
    path = variant(CLASSROOM, 1, made)
    first = upload(client, path, headers={"Idempotency-Key": "k-1"}).json()["jobs"][0]
    again = upload(client, path, headers={"Idempotency-Key": "k-1"}).json()["jobs"][0]
    assert again["job_id"] == first["job_id"]
    wait_job(client, first["job_id"])
    later = upload(client, path).json()["jobs"][0]  # no key: the sha256 says it is indexed already
    job = wait_job(client, later["job_id"])
    assert job["result"]["created"] is False
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(1 for v in client.get("/videos").json()["videos"] if v["sha256"] == sha) == 1


def test_worker_killed_mid_job_is_redelivered_and_indexes_once(stack, made):
    client = stack["client"]
    path = long_clip(made)  # 160 s: seconds of work
    job_id = upload(client, path).json()["jobs"][0]["job_id"]
    wait_for(lambda: client.get(f"/jobs/{job_id}").json()["state"] == "running", 60, "job never started")
    stack["workers"][0].kill(signal.SIGKILL)
    assert client.get(f"/jobs/{job_id}").json()["state"] == "running"
    stack["workers"][0] = Proc("service.worker", stack["env"], stack["root"] / "worker1.log").start()
    job = wait_job(client, job_id)
    assert job["state"] == "done" and job["attempts"] >= 2
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    db = Path(stack["env"]["HAPVR_DATA"]) / "store.sqlite"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM videos WHERE sha256=?", (sha,)).fetchone()[0] == 1


def test_api_restart_mid_job_loses_nothing(stack):
    client = stack["client"]
    job_id = upload(client, clip(CLASSROOM)).json()["jobs"][0]["job_id"]
    stack["api"].kill(signal.SIGKILL)
    stack["api"], new_client = start_api(stack["env"], stack["root"] / "api2.log")
    client.close()
    stack["client"] = new_client
    job = wait_job(new_client, job_id)
    assert job["state"] == "done"


def test_twenty_concurrent_uploads_and_queries(stack, made):
    client = stack["client"]
    names = [variant(name, 2, made) for name in SHORT]  # five distinct files
    before = count_videos(stack)

    def one(i: int):
        if i % 2:
            return upload(client, names[i % len(names)])
        return client.post("/query", files={"file": ("q.mp4", names[i % len(names)].read_bytes())},
                           data={"top_k": "3"})

    with cf.ThreadPoolExecutor(max_workers=20) as pool:
        responses = list(pool.map(one, range(20)))
    assert all(r.status_code in (200, 202) for r in responses), [r.text for r in responses if r.status_code >= 300]
    for r in responses:
        for j in r.json().get("jobs", []):
            assert wait_job(client, j["job_id"])["state"] == "done"
        if "job_id" in r.json():  # a query that outlived the sync timeout
            assert wait_job(client, r.json()["job_id"])["state"] == "done"
    videos = client.get("/videos", params={"limit": 1000}).json()["videos"]
    shas = [v["sha256"] for v in videos]
    assert len(shas) == len(set(shas))
    assert count_videos(stack) == before + len(names)


def y4m_with_absurd_size(path: Path) -> Path:
    path.write_bytes(b"YUV4MPEG2 W16000 H16000 F25:1 Ip A1:1 C420jpeg\nFRAME\n" + b"\x80" * 1000)
    return path


def test_every_bad_input_gets_a_clear_error_and_the_index_stays_intact(stack, tmp_path, made):
    client = stack["client"]
    before = client.get("/videos", params={"limit": 1000}).json()
    dog = faststart(BOTTLE, made).read_bytes()  # its index first: a prefix probes, then fails to decode
    cases = {
        "text.mp4": (b"just some text, no video at all\n" * 40, 415, "unsupported_media_type"),
        "zero.mp4": (b"", 400, "empty_file"),
        "head.mp4": (dog[:3000], 422, "truncated"),
        "audio.m4a": (write_audio_only(tmp_path / "a.m4a").read_bytes(), 415, "no_video_stream"),
        "image.png": (write_png(tmp_path / "i.png").read_bytes(), 415, "unsupported_media_type"),
        "huge.y4m": (y4m_with_absurd_size(tmp_path / "h.y4m").read_bytes(), 422, "bad_dimensions"),
        "big.mp4": (padded(BIKES, 7 * 1024 * 1024, made).read_bytes(), 413, "too_large"),  # 7 MB > the 6 MB limit
    }
    for name, (data, status, code) in cases.items():
        r = client.post("/index", files=[("files", (name, data, "application/octet-stream"))])
        assert r.status_code == status, (name, r.text)
        assert r.json()["error"]["code"] == code, (name, r.json())
        assert name in r.json()["error"]["message"]
    # truncated past the header: accepted, then the job fails with a clear code
    r = client.post("/index", files=[("files", ("cut.mp4", dog[:200_000], "video/mp4"))])
    assert r.status_code == 202
    job = wait_job(client, r.json()["jobs"][0]["job_id"])
    assert job["state"] == "failed" and job["error_code"] == "truncated"
    # wrong content type, missing fields, bad form values
    assert client.post("/index", content=b"hello", headers={"content-type": "text/plain"}).status_code == 415
    missing = client.post("/index", data={"external_id": "x"}, files=[("other", ("a.txt", b"x"))])
    assert missing.status_code == 400 and missing.json()["error"]["code"] == "missing_field"
    assert client.post("/query", data={"top_k": "3"}, files=[("nope", ("a", b"x"))]).status_code == 400
    bad_k = client.post("/query", files={"file": ("q.mp4", dog)}, data={"top_k": "zero"})
    assert bad_k.status_code == 422 and bad_k.json()["error"]["code"] == "invalid_request"
    for value in ("1.5", "-0.1", "sure"):
        bad_c = client.post("/query", files={"file": ("q.mp4", dog)}, data={"min_confidence": value})
        assert bad_c.status_code == 422 and "min_confidence" in bad_c.json()["error"]["message"], bad_c.text
    bad_json = client.post("/query", json={"video_id": "x", "min_confidence": 2})
    assert bad_json.status_code == 422 and "min_confidence" in bad_json.json()["error"]["message"], bad_json.text
    assert client.get("/jobs/does-not-exist").status_code == 404
    assert client.post("/query", json={"video_id": "nope"}).status_code == 404
    # imports are off unless configured, and never leave the import root
    assert client.post("/index", json={"files": [{"path": "x.mp4"}]}).json()["error"]["code"] == "imports_disabled"
    after = client.get("/videos", params={"limit": 1000}).json()
    assert after["total"] == before["total"] and after["videos"] == before["videos"]


def test_cancel_and_delete(stack):
    client = stack["client"]
    job_id = upload(client, clip(PEOPLE)).json()["jobs"][0]["job_id"]
    client.delete(f"/jobs/{job_id}")
    job = wait_job(client, job_id)
    assert job["state"] in ("cancelled", "done")  # it may have finished before the cancel landed
    ids = [v["id"] for v in client.get("/videos").json()["videos"]]
    assert client.delete(f"/videos/{ids[0]}").status_code == 204
    assert client.get(f"/videos/{ids[0]}").status_code == 404
    assert client.delete(f"/videos/{ids[0]}").status_code == 404


def test_metrics_and_readiness(stack):
    client = stack["client"]
    text = client.get("/metrics").text
    for name in ("hapvr_queue_depth", "hapvr_jobs", "hapvr_index_videos", "hapvr_request_seconds_bucket",
                 "hapvr_frames_embedded", "hapvr_workers_alive"):
        assert name in text
    ready = client.get("/readyz").json()
    assert ready["ready"] and ready["checks"]["queue"] and ready["checks"]["workers"] >= 1


def test_embedded_mode_with_api_keys_and_imports(tmp_path):
    """No Redis: the API runs its own worker. Keys on: 401 without, 403 wrong, 200 right; health stays open."""
    imports = tmp_path / "imports"
    (imports / "sub").mkdir(parents=True)
    shutil.copy(clip(ASL), imports / "sub" / "yes.mkv")
    env = service_env(tmp_path / "data", free_port(), None, HAPVR_API_KEYS="alpha,beta",
                      HAPVR_IMPORT_ROOT=str(imports))
    api, client = start_api(env, tmp_path / "api.log")
    try:
        assert client.get("/healthz").status_code == 200
        assert client.get("/videos").status_code == 401
        assert client.get("/videos").json()["error"]["code"] == "unauthorized"
        assert client.get("/videos", headers={"Authorization": "Bearer wrong"}).status_code == 403
        good = {"Authorization": "Bearer beta"}
        assert client.get("/videos", headers=good).status_code == 200
        r = client.post("/index", json={"files": [{"path": "sub/yes.mkv", "external_id": "case-7",
                                                   "metadata": {"team": "tns"}}]}, headers=good)
        assert r.status_code == 202, r.text
        job = wait_job(client, r.json()["jobs"][0]["job_id"], headers=good)
        assert job["state"] == "done"
        listed = client.get("/videos", params={"meta": "team:tns"}, headers=good).json()
        assert listed["total"] == 1 and listed["videos"][0]["source"] == "case-7"
        assert client.get("/videos", params={"meta": "team:other"}, headers=good).json()["total"] == 0
        escape = client.post("/index", json={"files": [{"path": "../../etc/passwd"}]}, headers=good)
        assert escape.status_code == 400 and escape.json()["error"]["code"] == "path_outside_import_root"
        q = client.post("/query", files={"file": ("q.mkv", clip(ASL).read_bytes())}, headers=good)
        assert q.status_code == 200 and q.json()["results"][0]["source"] == "case-7"
    finally:
        client.close()
        api.kill(signal.SIGTERM)
