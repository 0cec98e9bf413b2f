"""Mixed load for minutes: `python -m bench.soak [--minutes 5 --uploaders 50 --queriers 50]`.

A real uvicorn API, redis-server (AOF on) and two worker processes on one data folder, loopback only.
Each uploader thread uploads a file no one uploaded before (a short demo clip with its own trailing
bytes, so its own sha256), polls its job to the end and starts again; each querier thread alternates a
query by an indexed video's id, a query by upload of a demo clip, and a page of GET /videos. Clients
are closed-loop (a thread sends its next request when the last one is answered), so the offered load
follows what two CPU workers can do rather than growing a queue without end. All clients come from one
address without a key, so the per-key rate limit is lifted here (tests/test_api_hardening.py checks it).

It then waits for every accepted job and checks: no 5xx at any time, every upload done and indexed
exactly once (as many rows as distinct files, no sha256 twice), and the resident memory of the API and
workers in the last minute against the first. p50/p95 per route go to docs/BENCHMARKS.md, the verdict
to docs/RELIABILITY.md (`--no-write`: print only).
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import random
import shutil
import signal
import sqlite3
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

import httpx
import numpy as np

from bench.report import engine_config, publish, rss_mb, table
from bench.service_procs import Proc, RedisServer, free_port, service_env, start_api, wait_for, wait_job

CLIPS = Path(__file__).resolve().parents[1] / "demo" / "videos"
#: the short demo clips uploaders send (1.9-3 s): many jobs in five minutes, each a real decode and embed
UPLOADED = ["intel__preview_people-detection.mp4", "intel__preview_classroom.mp4", "intel__asl_again.mkv"]
QUERIED = "intel__preview_car-detection.mp4"


class Recorder:
    """Latency per route and every status code, from many threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.statuses: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
        self.errors: list[str] = []

    def call(self, route: str, send) -> httpx.Response | None:
        start = time.perf_counter()
        try:
            response = send()
        except httpx.HTTPError as exc:  # no answer at all: counted against the service
            with self.lock:
                self.errors.append(f"{route}: {type(exc).__name__}: {exc}")
            return None
        elapsed = time.perf_counter() - start
        with self.lock:
            self.latency[route].append(elapsed)
            self.statuses[route][response.status_code] += 1
        return response


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--uploaders", type=int, default=50)
    parser.add_argument("--queriers", type=int, default=50)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hapvr-soak-"))
    redis = RedisServer(work / "redis").start()
    env = service_env(work / "data", free_port(), redis.url, HAPVR_LOG_LEVEL="WARNING",
                      HAPVR_JOB_VISIBILITY_S="60", HAPVR_RATE_LIMIT="100000", HAPVR_RATE_BURST="100000")
    api, _ = start_api(env, work / "api.log")
    workers = [Proc("service.worker", env, work / f"worker{i}.log").start() for i in range(2)]
    base = f"http://127.0.0.1:{env['HAPVR_PORT']}"
    rec = Recorder()
    uploaded: dict[str, str] = {}  # sha256 -> job id, for every accepted upload
    upload_lock = threading.Lock()
    serial = itertools.count()
    stop = threading.Event()
    rss: dict[str, list[tuple[float, float]]] = defaultdict(list)
    try:
        with httpx.Client(base_url=base, timeout=600) as setup:
            wait_for(lambda: setup.get("/readyz").status_code == 200, 180, "workers not ready")
            seed = setup.post("/index", files=[("files", (n, (CLIPS / n).read_bytes())) for n in UPLOADED + [QUERIED]])
            ids = [wait_job(setup, j["job_id"])["result"]["video_id"] for j in seed.json()["jobs"]]
        clips = {n: (CLIPS / n).read_bytes() for n in UPLOADED}
        query_clip = (CLIPS / QUERIED).read_bytes()
        pids = {"api": api.proc.pid, **{f"worker{i}": w.proc.pid for i, w in enumerate(workers)}}

        def uploader(k: int) -> None:
            with httpx.Client(base_url=base, timeout=600) as client:
                while not stop.is_set():
                    n = next(serial)
                    name = UPLOADED[n % len(UPLOADED)]
                    data = clips[name] + f"soak-{n}".encode()  # trailing bytes: a new file, the same video
                    r = rec.call("POST /index", lambda: client.post("/index", files={"files": (name, data)}))
                    if r is None or r.status_code != 202:
                        time.sleep(1)
                        continue
                    job_id = r.json()["jobs"][0]["job_id"]
                    with upload_lock:
                        uploaded[hashlib.sha256(data).hexdigest()] = job_id
                    while not stop.is_set():
                        j = rec.call("GET /jobs/{id}", lambda: client.get(f"/jobs/{job_id}"))
                        if j is not None and j.status_code == 200 and j.json()["state"] in ("done", "failed",
                                                                                              "cancelled"):
                            break
                        time.sleep(0.5)

        def querier(k: int) -> None:
            rng = random.Random(k)
            with httpx.Client(base_url=base, timeout=600) as client:
                for turn in itertools.count(k):
                    if stop.is_set():
                        return
                    kind = turn % 3
                    if kind == 0:
                        rec.call("POST /query (video_id)",
                                 lambda: client.post("/query", json={"video_id": rng.choice(ids), "top_k": 5}))
                    elif kind == 1:
                        rec.call("POST /query (upload)", lambda: client.post(
                            "/query", files={"file": (QUERIED, query_clip)}, data={"top_k": "5"}))
                    else:
                        rec.call("GET /videos", lambda: client.get("/videos", params={"limit": 50}))

        def sampler() -> None:
            start = time.monotonic()
            while not stop.wait(5.0):
                for name, pid in pids.items():
                    rss[name].append((time.monotonic() - start, rss_mb(pid)))

        threads = [threading.Thread(target=uploader, args=(k,)) for k in range(args.uploaders)]
        threads += [threading.Thread(target=querier, args=(k,)) for k in range(args.queriers)]
        threads.append(threading.Thread(target=sampler))
        started = time.perf_counter()
        for t in threads:
            t.start()
        stop.wait(args.minutes * 60)
        stop.set()
        for t in threads:
            t.join()
        load_s = time.perf_counter() - started
        with httpx.Client(base_url=base, timeout=600) as client:  # every accepted upload must end indexed
            finals = [wait_job(client, job_id, timeout=1800) for job_id in uploaded.values()]
        with sqlite3.connect(Path(env["HAPVR_DATA"]) / "store.sqlite") as conn:
            rows = conn.execute("SELECT sha256, COUNT(*) FROM videos GROUP BY sha256").fetchall()
    finally:
        stop.set()
        for w in workers:
            w.kill(signal.SIGTERM)
        api.kill(signal.SIGTERM)
        redis.stop()
    store = dict(rows)
    not_done = [f for f in finals if f["state"] != "done"]
    missing = [s for s in uploaded if store.get(s) != 1]
    twice = [s for s, n in store.items() if n > 1]
    fives = {r: {c: n for c, n in codes.items() if c >= 500} for r, codes in rec.statuses.items()}
    fives = {r: c for r, c in fives.items() if c}
    routes = []
    for route in sorted(rec.latency):
        ms = np.array(rec.latency[route]) * 1000
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(rec.statuses[route].items()))
        routes.append([route, len(ms), round(len(ms) / load_s, 2), round(float(np.percentile(ms, 50))),
                       round(float(np.percentile(ms, 95))), codes])

    def drift(name: str) -> str:
        samples = rss[name]
        first = [mb for t, mb in samples if t <= 60] or [samples[0][1]]
        last = [mb for t, mb in samples if t >= samples[-1][0] - 60] or [samples[-1][1]]
        return f"{name} {np.median(first):.0f} → {np.median(last):.0f} MB"

    memory = "; ".join(drift(n) for n in sorted(rss))
    held = not (fives or rec.errors or not_done or missing or twice)
    from indexer.engine import Engine
    from config.settings import Settings

    config = engine_config(Engine(Settings(data=work / "cfg")))
    body = table(["route", "requests", "per s", "p50 ms", "p95 ms", "statuses"], routes)
    body += (f"\n\nEngine: {config}. {args.uploaders} uploaders and {args.queriers} queriers, closed-loop, for {load_s / 60:.1f} min "
             f"against one API, Redis and two workers (`HAPVR_WORKER_JOBS=2` each) on this machine; clients "
             f"share its cores. {len(uploaded)} distinct files uploaded and indexed. Resident memory, median of "
             f"the first minute → last minute: {memory}.")
    verdict = (f"{len(uploaded)} uploads in {load_s / 60:.1f} min, {sum(len(v) for v in rec.latency.values())} "
               f"requests: {'no' if not fives else fives} 5xx, {len(rec.errors)} unanswered, {len(not_done)} "
               f"jobs not done, {len(missing)} files not indexed exactly once, {len(twice)} sha256 twice; "
               f"RSS {memory}")
    print(verdict)
    if rec.errors:
        print("\n".join(rec.errors[:10]))
    publish("soak", "Service under mixed load: uploads and queries for minutes", "python -m bench.soak", body,
            print_only=args.no_write)
    if not args.no_write:
        from bench.reliability import write_figure

        write_figure("soak", verdict)
    shutil.rmtree(work, ignore_errors=True)
    raise SystemExit(0 if held else 1)


if __name__ == "__main__":
    main()
