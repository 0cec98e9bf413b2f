"""Cluster mode on several "hosts": two API processes and three workers, each with its own empty data folder
and nothing shared but the network services (Redis, PostgreSQL, an S3 server). 101 distinct videos are
uploaded by 20 concurrent clients, one worker is killed with SIGKILL in the middle of a job, and then every
video is indexed exactly once and queries answer as the embedded default does on the same files."""
from __future__ import annotations

import hashlib
import itertools
import signal
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import psycopg
import pytest
import redis

from bench.service_procs import PostgresDatabase, Proc, RedisServer, S3Server, free_port, service_env, start_api, wait_for
from indexer.engine import Engine
from tests.clips import BOTTLE_PREVIEW, CAR, CLASSROOM, PEOPLE, SHORT, clip, long_clip, variant
from tests.test_engine import make_settings

COPIES = 20  # re-captioned copies of each of the five short demo clips: 100 distinct files


@pytest.fixture(scope="module")
def files(made):
    """100 short distinct files and one of 160 s, whose indexing takes long enough to be killed mid-job."""
    return [variant(name, k, made) for name in SHORT for k in range(10, 10 + COPIES)] + [long_clip(made)]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    redis_server = RedisServer(root / "redis").start()
    s3 = S3Server(root / "moto.log").start()
    bucket = s3.bucket(f"hapvr-{uuid.uuid4().hex[:8]}")
    db = PostgresDatabase().create()
    shared = {"HAPVR_CATALOG": db.url, "HAPVR_FEATURES": f"s3://{bucket}/features", "HAPVR_S3_ENDPOINT": s3.endpoint,
              "HAPVR_WORKER_JOBS": "1", "HAPVR_RATE_LIMIT": "0", **s3.env}

    def host(name: str) -> dict[str, str]:  # its own data folder and cache: no disk in common
        env = service_env(root / name / "data", free_port(), redis_server.url, **shared)
        env["HAPVR_CACHE_DIR"] = str(root / name / "cache")
        return env

    apis = [start_api(host(f"api{i}"), root / f"api{i}.log") for i in range(2)]
    workers = [Proc("service.worker", host(f"worker{i}"), root / f"worker{i}.log").start() for i in range(3)]
    yield {"root": root, "apis": apis, "workers": workers, "db": db, "s3": s3, "bucket": bucket,
           "redis": redis_server, "host": host}
    for worker in workers:
        worker.kill(signal.SIGTERM, grace=10)
    for api, client in apis:
        client.close()
        api.kill(signal.SIGTERM, grace=10)
    s3.stop()
    redis_server.stop()
    db.drop()


@pytest.fixture(scope="module")
def embedded(files, tmp_path_factory):
    engine = Engine(make_settings(tmp_path_factory.mktemp("embedded")))
    assert all(o.created for _, o in engine.index_many(files))
    return engine


def holder_of(r: redis.Redis, job_id: str) -> str | None:
    """The consumer (worker name) a job's stream entry is delivered to, while it is pending."""
    for entry in r.xpending_range("hapvr:jobs", "workers", min="-", max="+", count=1000):
        fields = r.xrange("hapvr:jobs", entry["message_id"], entry["message_id"])
        if fields and fields[0][1][b"job"].decode() == job_id:
            return entry["consumer"].decode()
    return None


def test_many_hosts_index_every_video_once_and_answer_like_the_embedded_default(cluster, files, embedded):
    clients = [c for _, c in cluster["apis"]]
    wait_for(lambda: clients[0].get("/readyz").status_code == 200, 180, "no worker became ready")

    def upload(args):
        i, path = args
        client = clients[i % 2]  # every other upload to the other API process
        r = client.post("/index", files={"files": (path.name, path.read_bytes(), "video/mp4")})
        assert r.status_code == 202, r.text
        return path, r.json()["jobs"][0]["job_id"], client

    long_path = files[-1]
    with ThreadPoolExecutor(20) as pool:  # 20 concurrent clients
        submitted = list(pool.map(upload, enumerate([long_path, *files[:-1]])))
    long_job = submitted[0][1]

    # SIGKILL the worker that runs the long job, in the middle of it
    r = redis.Redis.from_url(cluster["redis"].url)
    holder = wait_for(lambda: holder_of(r, long_job) if clients[0].get(f"/jobs/{long_job}").json()["state"]
                      == "running" else None, 240, "the long job never started")
    pid = int(holder.rsplit("-", 2)[1])
    (victim,) = [w for w in cluster["workers"] if w.proc.pid == pid]
    victim.kill(signal.SIGKILL)
    assert clients[1].get(f"/jobs/{long_job}").json()["state"] == "running"  # now nobody's: re-delivered soon

    def final(job_id: str, client: httpx.Client):
        job = client.get(f"/jobs/{job_id}").json()
        return job if job["state"] in ("done", "failed", "cancelled") else None

    jobs = {job_id: wait_for(lambda: final(job_id, c), 600, f"job {job_id} of {p.name} did not finish", interval=0.5)
            for p, job_id, c in submitted}
    assert all(j["state"] == "done" for j in jobs.values()), [j for j in jobs.values() if j["state"] != "done"][:2]
    assert jobs[long_job]["attempts"] >= 2

    # every video exactly once in the catalog, with its features in the object store
    want = {hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    with psycopg.connect(cluster["db"].url) as conn:
        rows = conn.execute("SELECT id, sha256 FROM videos").fetchall()
    assert len(rows) == len(files) and {sha for _, sha in rows} == want
    s3 = cluster["s3"].client()
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=cluster["bucket"])
            for o in page.get("Contents", [])]
    stored = {k.rsplit("/", 1)[1][:-4] for k in keys if k.startswith("features/") and k.count("/") == 1}
    assert {vid for vid, _ in rows} <= stored and len(stored - {vid for vid, _ in rows}) <= 1  # the killed job's
    assert not [k for k in keys if k.startswith("features/uploads/")]  # every upload was discarded after its job

    # queries through either API answer as the embedded default on the same files
    for query, client in zip([clip(CAR), clip(CLASSROOM), clip(PEOPLE), clip(BOTTLE_PREVIEW)], itertools.cycle(clients)):
        got = client.post("/query", files={"file": (query.name, query.read_bytes(), "video/mp4")},
                          data={"top_k": "10"})
        assert got.status_code == 200, got.text
        got = got.json()["results"]
        expected = embedded.query(query, top_k=10)["results"]
        assert [g["source"] for g in got] == [e["source"].rsplit("/", 1)[1] for e in expected]
        assert all(abs(g["score"] - e["score"]) <= 1e-4 for g, e in zip(got, expected))

    # what the web UI shows comes from the object store through either API: key frames, and the kept upload
    # with ranged reads
    by_name = {p.name: p for p in files}
    top = clients[0].post("/query", files={"file": (CAR, clip(CAR).read_bytes(), "video/mp4")}).json()["results"][0]
    original = by_name[top["source"]].read_bytes()
    for client in clients:
        assert client.get(f"/videos/{top['id']}/thumbnail").headers["content-type"] == "image/jpeg"
        part = client.get(f"/videos/{top['id']}/media", headers={"Range": "bytes=100-1099"})
        assert part.status_code == 206 and part.content == original[100:1100], part.status_code
        assert part.headers["content-range"] == f"bytes 100-1099/{len(original)}"
        assert client.get(f"/videos/{top['id']}/media").content == original
