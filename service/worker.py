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
from config.settings import Settings
from service.jobs import Cancelled, Job, LocalQueue, RedisQueue, make_queue
from service.staging import SharedFolder, Staging, make_staging

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, queue: RedisQueue | LocalQueue, engine: Engine, name: str | None = None,
                 staging: Staging | None = None):
        self.queue = queue
        self.staging = staging or SharedFolder()
        self.engine = engine
        self.name = name or f"{socket.gethostname()}-{os.getpid()}-{threading.get_ident() % 10000}"
        self.stop = threading.Event()

    def run_forever(self) -> None:
        log.info("worker %s ready", self.name)
        self.queue.heartbeat(self.name)
        while not self.stop.is_set():
            try:
                self.run_once()
            except Exception as exc:  # noqa: BLE001 - Redis down or restarting: wait for it, never die
                log.warning("worker %s: queue unavailable (%s: %s); retrying in 1 s", self.name,
                            type(exc).__name__, exc)
                self.stop.wait(1.0)

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
            self.staging.discard(job.payload)
            return
        log.info("worker %s: job %s (%s), attempt %d", self.name, job.id, job.kind, job.attempts + 1)
        q.update(job, state="running", stage="decoding", progress=0.0, attempts=job.attempts + 1)
        renew = threading.Event()

        def keep_claim() -> None:
            interval = max(1.0, getattr(q, "visibility_ms", 30000) / 3000)
            while not renew.wait(interval):
                try:
                    q.keepalive(self.name, entry)
                    q.heartbeat(self.name)
                except Exception as exc:  # noqa: BLE001 - Redis away for a moment: keep the job, try again
                    log.warning("job %s: could not renew its claim (%s)", job.id, exc)

        keeper = threading.Thread(target=keep_claim, daemon=True)
        keeper.start()
        last_report = [0.0]

        def progress(stage: str, fraction: float) -> None:
            now = time.monotonic()
            if now - last_report[0] <= 0.25 and fraction < 1.0:
                return
            last_report[0] = now
            try:  # progress is best effort: a Redis restart must not fail the job
                cancelled = q.is_cancelled(job.id)
                q.update(job, stage=stage, progress=round(100 * fraction, 1))
            except Exception as exc:  # noqa: BLE001
                log.warning("job %s: progress not recorded (%s)", job.id, exc)
                return
            if cancelled:
                raise Cancelled(job.id)

        start = time.perf_counter()
        try:
            result, timings = self._run(job, progress)
            final = dict(state="done", stage="done", progress=100.0, result=result,
                         timings_ms={**timings, "total": round((time.perf_counter() - start) * 1000, 1)})
        except Cancelled:
            final = dict(state="cancelled", stage="cancelled")
        except InputError as exc:
            final = dict(state="failed", stage="failed", error_code=exc.code, error_message=exc.message)
        except Exception as exc:  # noqa: BLE001 - a job failure must not kill the worker
            if self.queue.transient(exc):  # the queue went away mid-job: the job is not at fault, run it again
                log.warning("job %s: interrupted by the queue (%s); left for re-delivery", job.id, exc)
                return  # (after the finally below) no outcome recorded, no ack
            log.exception("job %s failed", job.id)
            final = dict(state="failed", stage="failed", error_code="internal", error_message=str(exc))
        finally:
            renew.set()
            keeper.join(timeout=5)
        if self._finish(entry, job, final):
            self.staging.discard(job.payload)

    def _finish(self, entry: str, job: Job, final: dict, patience_s: float = 120.0) -> bool:
        """Record the outcome, then acknowledge the entry, retrying while Redis is away. Given up after
        `patience_s`, the entry stays pending and is re-delivered: the job runs again (indexing is
        idempotent by sha256) rather than being lost."""
        deadline = time.monotonic() + patience_s
        while True:
            try:
                self.queue.update(job, **final)
                self.queue.ack(entry)
                return True
            except Exception as exc:  # noqa: BLE001
                if time.monotonic() > deadline:
                    log.error("job %s: outcome not recorded (%s); it will be re-delivered", job.id, exc)
                    return False
                log.warning("job %s: outcome not recorded yet (%s); retrying", job.id, exc)
                time.sleep(1.0)

    def _run(self, job: Job, progress) -> tuple[dict, dict]:
        p = job.payload
        # an upload is fetched from where it waits (service/staging.py); a server-side import is read in place
        path = self.staging.fetch(p["upload"]) if p.get("upload") else Path(p["path"]) if p.get("path") else None
        try:
            return self._run_on(job, path, progress)
        except InputError as exc:
            if p.get("upload") and path is not None:  # name the file as the client sent it, not where it waited
                raise InputError(exc.code, exc.message.replace(str(path), p.get("filename") or p.get("label")
                                                                or "the upload")) from None
            raise

    def _run_on(self, job: Job, path: Path | None, progress) -> tuple[dict, dict]:
        p = job.payload
        if job.kind == "index":
            # an upload is ours to keep (linked into the media store for the web UI's player); an import is
            # the operator's file, read in place and never moved
            keep = bool(p.get("upload")) and self.engine.settings.keep_uploads
            outcome = self.engine.index(path, external_id=p.get("external_id"), metadata=p.get("metadata"),
                                        force=p.get("force", False), progress=progress, keep_source=keep)
            if outcome.created:
                try:
                    self.queue.count_frames(outcome.record.frames)
                except Exception as exc:  # noqa: BLE001 - a statistic, not the job's outcome
                    log.warning("frames-embedded counter not updated (%s)", exc)
            return ({"video_id": outcome.record.id, "created": outcome.created, "video": outcome.record.public()},
                    {k: round(v, 1) for k, v in outcome.timings_ms.items()})
        if job.kind == "query":
            progress("embedding", 0.0)
            if p.get("video_id"):
                result = self.engine.query_by_id(p["video_id"], top_k=p.get("top_k"), min_score=p.get("min_score"),
                                                 min_confidence=p.get("min_confidence"),
                                                 matrices=bool(p.get("matrices")))
            else:
                result = self.engine.query(path, top_k=p.get("top_k"), min_score=p.get("min_score"),
                                           label=p.get("label"), min_confidence=p.get("min_confidence"),
                                           matrices=bool(p.get("matrices")))
            return result, result.get("timings_ms", {})
        if job.kind == "duplicates":
            result = self.engine.duplicates(min_confidence=p.get("min_confidence", 0.5), progress=progress)
            # the sets are served by GET /duplicates (the engine wrote them); the job keeps a summary
            summary = {k: result[k] for k in ("min_confidence", "grouped", "videos", "scanned_now", "pairs_scored")}
            return {**summary, "groups": len(result["groups"])}, {"scan_and_group": result["elapsed_s"] * 1000}
        raise InputError("bad_job", f"unknown job kind {job.kind!r}")


def main() -> None:
    logging.basicConfig(level=os.environ.get("HAPVR_LOG_LEVEL", "INFO"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings()
    if not settings.redis_url:
        raise SystemExit("hapvr worker: HAPVR_REDIS_URL is not set (without Redis the API runs its own workers)")
    engine = Engine(settings)
    engine.warm_up()  # load everything before taking jobs
    engine.repair()
    jobs = max(1, settings.worker_jobs)
    if jobs > 1:  # several jobs at once: their frames share encoder batches
        from indexer.batching import FrameBatcher

        engine.batcher = FrameBatcher(engine.encoder.encode, max_batch=settings.encode_batch * 2)
    base = f"{socket.gethostname()}-{os.getpid()}"
    staging = make_staging(settings)
    workers = [Worker(make_queue(settings), engine, name=f"{base}-{i}", staging=staging) for i in range(jobs)]
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
