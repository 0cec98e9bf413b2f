"""Workers: take jobs off the queue and run them on the engine. `python -m service.worker` runs one.

A worker loads the model once, renews its claim on the job it runs (so a
live worker is never robbed of a long job), reports progress, honours
cancellation, and acknowledges a job only once it is final. A worker killed
mid-job leaves its entry unacknowledged; another worker re-runs it after
`HAPVR_JOB_VISIBILITY_S`. Indexing twice is impossible: the engine is
idempotent by sha256 under the store's cross-process write lock.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path

from indexer.engine import Engine
from indexer.errors import InputError
from indexer.settings import Settings
from service.jobs import Cancelled, Job, LocalQueue, RedisQueue, make_queue
from service.uploads import discard_upload

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, queue: RedisQueue | LocalQueue, engine: Engine, name: str | None = None):
        self.queue = queue
        self.engine = engine
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10000}"
        self.stop = threading.Event()

    def run_forever(self) -> None:
        log.info("worker %s ready", self.name)
        self.queue.heartbeat(self.name)
        while not self.stop.is_set():
            self.run_once()

    def run_once(self, block_s: float = 1.0) -> bool:
        self.queue.heartbeat(self.name)
        got = self.queue.next(self.name, block_s=block_s)
        if got is None:
            return False
        entry, job = got
        self._process(entry, job)
        return True

    def _process(self, entry: str, job: Job) -> None:
        q = self.queue
        if q.is_cancelled(job.id):
            q.update(job, state="cancelled", stage="cancelled")
            q.ack(entry)
            discard_upload(job.payload)
            return
        q.update(job, state="running", stage="decoding", progress=0.0, attempts=job.attempts + 1)
        renew = threading.Event()

        def keep_claim() -> None:
            interval = max(1.0, getattr(q, "visibility_ms", 30000) / 3000)
            while not renew.wait(interval):
                q.keepalive(self.name, entry)
                q.heartbeat(self.name)

        keeper = threading.Thread(target=keep_claim, daemon=True)
        keeper.start()
        last_report = [0.0]

        def progress(stage: str, fraction: float) -> None:
            if q.is_cancelled(job.id):
                raise Cancelled(job.id)
            now = time.monotonic()
            if now - last_report[0] > 0.25 or fraction >= 1.0:
                last_report[0] = now
                q.update(job, stage=stage, progress=round(100 * fraction, 1))

        start = time.perf_counter()
        try:
            result, timings = self._run(job, progress)
            q.update(job, state="done", stage="done", progress=100.0, result=result,
                     timings_ms={**timings, "total": round((time.perf_counter() - start) * 1000, 1)})
        except Cancelled:
            q.update(job, state="cancelled", stage="cancelled")
        except InputError as exc:
            q.update(job, state="failed", stage="failed", error_code=exc.code, error_message=exc.message)
        except Exception as exc:  # noqa: BLE001 - a job failure must not kill the worker
            log.exception("job %s failed", job.id)
            q.update(job, state="failed", stage="failed", error_code="internal", error_message=str(exc))
        finally:
            renew.set()
            keeper.join(timeout=5)
            q.ack(entry)
            discard_upload(job.payload)

    def _run(self, job: Job, progress) -> tuple[dict, dict]:
        p = job.payload
        if job.kind == "index":
            outcome = self.engine.index(Path(p["path"]), external_id=p.get("external_id"),
                                        metadata=p.get("metadata"), force=p.get("force", False), progress=progress)
            if outcome.created:
                self.queue.count_frames(outcome.record.frames)
            return ({"video_id": outcome.record.id, "created": outcome.created, "video": outcome.record.public()},
                    {k: round(v, 1) for k, v in outcome.timings_ms.items()})
        if job.kind == "query":
            progress("embedding", 0.0)
            if p.get("video_id"):
                result = self.engine.query_by_id(p["video_id"], top_k=p.get("top_k"), min_score=p.get("min_score"))
            else:
                result = self.engine.query(Path(p["path"]), top_k=p.get("top_k"), min_score=p.get("min_score"),
                                           label=p.get("label"))
            return result, result.get("timings_ms", {})
        raise InputError("bad_job", f"unknown job kind {job.kind!r}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("HAPVR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if not settings.redis_url:
        raise SystemExit("hapvr worker: HAPVR_REDIS_URL is not set (without Redis the API runs its own workers)")
    engine = Engine(settings)
    engine.encoder, engine.network, engine.coarse  # load everything before taking jobs
    engine.store.remove_orphans()
    jobs = max(1, settings.worker_jobs)
    if jobs > 1:  # several jobs at once: their frames share encoder batches
        from indexer.batching import FrameBatcher

        engine.batcher = FrameBatcher(engine.encoder.encode, max_batch=settings.encode_batch * 2)
    base = f"{socket.gethostname()}-{os.getpid()}"
    workers = [Worker(make_queue(settings), engine, name=f"{base}-{i}") for i in range(jobs)]
    signal.signal(signal.SIGTERM, lambda *_: [w.stop.set() for w in workers])
    threads = [threading.Thread(target=w.run_forever, name=w.name) for w in workers]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        engine.save()


if __name__ == "__main__":
    main()
