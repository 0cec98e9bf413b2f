"""A small load test of POST /query on this machine: real uvicorn API, Redis queue, one worker.

Indexes the demo clips, then sends `--requests` queries (uploads of real clips) from `--concurrency`
client threads and reports requests/s and latency percentiles. Loopback only, bounded in count.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import shutil
import signal
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.report import engine_config, publish, table
from bench.service_procs import Proc, RedisServer, free_port, service_env, start_api, wait_for, wait_job

CLIPS = Path(__file__).resolve().parents[1] / "demo" / "videos"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=60)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hapvr-load-"))
    redis = RedisServer(work / "redis").start()
    env = service_env(work / "data", free_port(), redis.url, HAPVR_LOG_LEVEL="WARNING")
    api, client = start_api(env, work / "api.log")
    worker = Proc("service.worker", env, work / "worker.log").start()
    rows = []
    try:
        wait_for(lambda: client.get("/readyz").status_code == 200, 120, "worker not ready")
        clips = sorted(p for p in CLIPS.iterdir() if p.suffix in (".mp4", ".mkv"))
        r = client.post("/index", files=[("files", (p.name, p.read_bytes())) for p in clips])
        for job in r.json()["jobs"]:
            wait_job(client, job["job_id"])
        payloads = [(p.name, p.read_bytes()) for p in clips]
        for concurrency in (1, 4, 8):
            latencies: list[float] = []

            def one(i: int) -> int:
                name, data = payloads[i % len(payloads)]
                start = time.perf_counter()
                resp = client.post("/query", files={"file": (name, data)}, data={"top_k": "5"})
                latencies.append(time.perf_counter() - start)
                return resp.status_code

            start = time.perf_counter()
            with cf.ThreadPoolExecutor(max_workers=concurrency) as pool:
                codes = list(pool.map(one, range(args.requests)))
            wall = time.perf_counter() - start
            ms = np.array(latencies) * 1000
            rows.append([concurrency, args.requests, sum(c == 200 for c in codes), round(args.requests / wall, 2),
                         round(float(np.percentile(ms, 50))), round(float(np.percentile(ms, 95)))])
            print(rows[-1], flush=True)
    finally:
        client.close()
        worker.kill(signal.SIGTERM)
        api.kill(signal.SIGTERM)
        redis.stop()
        shutil.rmtree(work, ignore_errors=True)
    body = table(["client threads", "requests", "200 OK", "requests/s", "p50 ms", "p95 ms"], rows)
    from indexer.engine import Engine
    from config.settings import Settings

    config = engine_config(Engine(Settings(data=Path(tempfile.mkdtemp(prefix="hapvr-cfg-")))))
    body += (f"\n\nEngine: {config}. Each request uploads one of the demo clips (83 KB to 505 KB, 2-40 s) and waits for the ranked "
             "result: upload, header probe, queue, decode, embed (+ mirrored), search of the 6-video index, "
             "segments. One CPU worker, so throughput is bounded by one worker's decode+embed; add workers "
             "to scale.")
    publish("load", "Service load test: POST /query", "python -m bench.load_test", body, print_only=args.no_write)


if __name__ == "__main__":
    main()
