"""Jobs and the two queues they travel on.

`RedisQueue` (HAPVR_REDIS_URL set): jobs are hashes `<prefix>:job:<id>`; the
queue is the stream `<prefix>:jobs` read by the consumer group `workers`.
A worker acknowledges an entry only after the job finished, and renews its
claim while working; an entry whose worker went silent for
`job_visibility_s` (killed, crashed) is claimed by another worker
(XAUTOCLAIM) and re-run. Re-running is safe because indexing is idempotent by
sha256 under the store's write lock.

`LocalQueue` (no Redis): the same interface in memory, with worker threads
in the API process; jobs do not survive a restart.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

from service.limits import TokenBuckets

log = logging.getLogger(__name__)

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = frozenset({"done", "failed", "cancelled"})


@dataclass
class Job:
    id: str
    kind: str  # "index", "query" or "duplicates"
    payload: dict[str, Any]
    state: str = "queued"
    stage: str = "queued"
    progress: float = 0.0
    error_code: str | None = None
    error_message: str | None = None
    result: dict[str, Any] | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    attempts: int = 0

    def to_redis(self) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in asdict(self).items()}

    @classmethod
    def from_redis(cls, raw: dict[bytes | str, bytes | str]) -> "Job":
        fields = {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}
        return cls(**{k: v for k, v in fields.items() if k in cls.__dataclass_fields__})


class Cancelled(Exception):
    """Raised inside a running job when it was cancelled."""


def new_job_id() -> str:
    return uuid.uuid4().hex


@runtime_checkable
class JobQueue(Protocol):
    """What the API and the workers need of a job queue; `RedisQueue` (several processes and hosts) and
    `LocalQueue` (one process, the embedded default) both provide it (tests/test_contracts.py)."""

    @staticmethod
    def transient(exc: BaseException) -> bool:
        """Whether `exc` is the queue being briefly unreachable (retry) rather than a bug."""

    def ping(self) -> bool: ...
    def submit(self, job: Job) -> Job: ...
    def get(self, job_id: str) -> Job | None: ...
    def update(self, job: Job, **fields: Any) -> Job:
        """Set fields and publish the job; a final state wakes whoever waits on it."""
    def cancel(self, job_id: str) -> Job | None:
        """A queued job is cancelled at once; a running one at its worker's next progress report."""
    def is_cancelled(self, job_id: str) -> bool: ...
    def wait(self, job_id: str, timeout: float) -> Job | None:
        """The job once it is final, or as it is when `timeout` passes."""
    def next(self, worker: str, block_s: float = 1.0) -> tuple[str, Job] | None:
        """The next job to run with its delivery entry, or None after `block_s`; RedisQueue delivers again a
        job whose worker stopped calling `keepalive`."""
    def keepalive(self, worker: str, entry: str) -> None: ...
    def ack(self, entry: str) -> None: ...
    def remember(self, key: str, value: dict, ttl_s: int = 86400) -> dict: ...
    def recall(self, key: str) -> dict | None: ...
    def forget(self, key: str) -> None: ...
    def take_token(self, who: str, rate: float, burst: int) -> float: ...
    def stats(self) -> dict[str, Any]: ...
    def recent(self, limit: int = 50) -> list[Job]:
        """The newest jobs first (what a console lists: queued, running, failed with their codes)."""
    def count_frames(self, n: int) -> None: ...
    def heartbeat(self, worker: str, ttl_s: float = 15.0) -> None: ...
    def workers_alive(self) -> int: ...


class RedisQueue:
    STREAM_GROUP = "workers"

    def __init__(self, url: str, prefix: str = "hapvr", visibility_s: float = 30.0):
        import redis

        self.redis = redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)
        self.prefix = prefix
        self.visibility_ms = int(visibility_s * 1000)
        self.stream = f"{prefix}:jobs"
        self._group_ready = False
        self._token_script = None

    # ----- keys
    def _job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        import redis

        try:
            self.redis.xgroup_create(self.stream, self.STREAM_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    @staticmethod
    def transient(exc: BaseException) -> bool:
        """Whether `exc` is Redis being away (restarting, unreachable) rather than a fault of the job."""
        import redis

        return isinstance(exc, (redis.ConnectionError, redis.TimeoutError))

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except Exception:  # noqa: BLE001 - readiness is a yes/no
            return False

    # ----- API side
    def submit(self, job: Job) -> Job:
        self._ensure_group()
        pipe = self.redis.pipeline()
        pipe.hset(self._job(job.id), mapping=job.to_redis())
        pipe.zadd(f"{self.prefix}:jobs_by_time", {job.id: job.created})
        if job.state == "queued":
            pipe.xadd(self.stream, {"job": job.id})
        pipe.execute()
        return job

    def get(self, job_id: str) -> Job | None:
        raw = self.redis.hgetall(self._job(job_id))
        return Job.from_redis(raw) if raw else None

    def update(self, job: Job, **fields: Any) -> Job:
        for key, value in fields.items():
            setattr(job, key, value)
        job.updated = time.time()
        self.redis.hset(self._job(job.id), mapping={k: json.dumps(getattr(job, k)) for k in (*fields, "updated")})
        if job.state in FINAL:
            self.redis.publish(f"{self.prefix}:done", job.id)
        return job

    def cancel(self, job_id: str) -> Job | None:
        job = self.get(job_id)
        if job is None or job.state in FINAL:
            return job
        self.redis.set(f"{self.prefix}:cancel:{job_id}", 1, ex=86400)
        if job.state == "queued":
            return self.update(job, state="cancelled", stage="cancelled")
        return job  # running: the worker stops at its next progress report

    def is_cancelled(self, job_id: str) -> bool:
        return bool(self.redis.exists(f"{self.prefix}:cancel:{job_id}"))

    def wait(self, job_id: str, timeout: float) -> Job | None:
        """Block until the job is final or `timeout` passes (pub/sub wake-ups, polling as a fallback)."""
        deadline = time.monotonic() + timeout
        pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(f"{self.prefix}:done")
        try:
            while True:
                job = self.get(job_id)
                if job is None or job.state in FINAL:
                    return job
                left = deadline - time.monotonic()
                if left <= 0:
                    return job
                pubsub.get_message(timeout=min(left, 0.5))
        finally:
            pubsub.close()

    #: a token bucket per client (service.limits): refill at ARGV[1] a second up to ARGV[2]; Redis's own clock,
    #: so that API processes on several hosts share one bucket whatever their clocks say
    TOKEN_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local last = tonumber(state[2]) or now
tokens = math.min(burst, tokens + (now - last) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = (1 - tokens) / rate end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return tostring(wait)
"""

    def take_token(self, who: str, rate: float, burst: int) -> float:
        """Spend one request of `who`'s rate limit: 0 when allowed, else the seconds to wait."""
        if self._token_script is None:
            self._token_script = self.redis.register_script(self.TOKEN_SCRIPT)
        return float(self._token_script(keys=[f"{self.prefix}:rate:{who}"], args=[rate, burst]))

    def forget(self, key: str) -> None:
        self.redis.delete(f"{self.prefix}:idem:{key}")

    def remember(self, key: str, value: dict, ttl_s: int = 86400) -> dict:
        """Set key -> value unless set; returns what is stored (the first value wins)."""
        full = f"{self.prefix}:idem:{key}"
        if self.redis.set(full, json.dumps(value), nx=True, ex=ttl_s):
            return value
        stored = self.redis.get(full)
        return json.loads(stored) if stored else value

    def recall(self, key: str) -> dict | None:
        stored = self.redis.get(f"{self.prefix}:idem:{key}")
        return json.loads(stored) if stored else None

    def stats(self) -> dict[str, Any]:
        self._ensure_group()
        depth = 0
        for group in self.redis.xinfo_groups(self.stream):
            name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
            if name == self.STREAM_GROUP:
                depth = int(group.get("lag") or 0) + int(group.get("pending") or 0)
        by_state = {state: 0 for state in STATES}
        recent = self.redis.zrevrange(f"{self.prefix}:jobs_by_time", 0, 9999)
        pipe = self.redis.pipeline()
        for job_id in recent:
            pipe.hget(self._job(job_id.decode()), "state")
        for state in pipe.execute():
            if state:
                by_state[json.loads(state)] = by_state.get(json.loads(state), 0) + 1
        frames = int(self.redis.get(f"{self.prefix}:stats:frames_embedded") or 0)
        return {"queue_depth": depth, "jobs_by_state": by_state, "frames_embedded": frames}

    def recent(self, limit: int = 50) -> list[Job]:
        ids = self.redis.zrevrange(f"{self.prefix}:jobs_by_time", 0, max(0, limit - 1))
        pipe = self.redis.pipeline()
        for job_id in ids:
            pipe.hgetall(self._job(job_id.decode()))
        return [Job.from_redis(raw) for raw in pipe.execute() if raw]

    def count_frames(self, n: int) -> None:
        self.redis.incrby(f"{self.prefix}:stats:frames_embedded", n)

    # ----- worker side
    def heartbeat(self, worker: str, ttl_s: float = 15.0) -> None:
        self.redis.set(f"{self.prefix}:worker:{worker}", time.time(), px=int(ttl_s * 1000))

    def workers_alive(self) -> int:
        return sum(1 for _ in self.redis.scan_iter(f"{self.prefix}:worker:*"))

    def next(self, worker: str, block_s: float = 1.0) -> tuple[str, Job] | None:
        """A re-deliverable entry first (from a dead worker), else a new one."""
        self._ensure_group()
        reclaimed = self.redis.xautoclaim(self.stream, self.STREAM_GROUP, worker,
                                          min_idle_time=self.visibility_ms, start_id="0-0", count=1)
        entries = reclaimed[1] if reclaimed else []
        if not entries:
            got = self.redis.xreadgroup(self.STREAM_GROUP, worker, {self.stream: ">"}, count=1,
                                        block=int(block_s * 1000))
            entries = got[0][1] if got else []
        for entry_id, fields in entries:
            entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            job = self.get(fields[b"job"].decode())
            if job is None or job.state in FINAL:
                self.ack(entry)
                continue
            return entry, job
        return None

    def keepalive(self, worker: str, entry: str) -> None:
        """Reset the entry's idle time so nobody reclaims a job that is still being worked on."""
        self.redis.xclaim(self.stream, self.STREAM_GROUP, worker, min_idle_time=0, message_ids=[entry],
                          justid=True)

    def ack(self, entry: str) -> None:
        self.redis.xack(self.stream, self.STREAM_GROUP, entry)


class LocalQueue:
    """In-process queue with the RedisQueue interface (the embedded default: no Redis needed)."""

    @staticmethod
    def transient(exc: BaseException) -> bool:
        return False  # an in-process queue never goes away

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._pending: list[str] = []
        self._cond = threading.Condition()
        self._idem: dict[str, dict] = {}
        self._cancel: set[str] = set()
        self._frames = 0
        self._beats: dict[str, float] = {}
        self._buckets = TokenBuckets()

    def ping(self) -> bool:
        return True

    def submit(self, job: Job) -> Job:
        with self._cond:
            self._jobs[job.id] = job
            if job.state == "queued":
                self._pending.append(job.id)
            self._cond.notify_all()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._cond:
            job = self._jobs.get(job_id)
            return Job(**asdict(job)) if job else None

    def update(self, job: Job, **fields: Any) -> Job:
        with self._cond:
            for key, value in fields.items():
                setattr(job, key, value)
            job.updated = time.time()
            self._jobs[job.id] = Job(**asdict(job))
            self._cond.notify_all()
        return job

    def cancel(self, job_id: str) -> Job | None:
        with self._cond:
            job = self._jobs.get(job_id)
            if job is None or job.state in FINAL:
                return job
            self._cancel.add(job_id)
        if job.state == "queued":
            with self._cond:
                if job_id in self._pending:
                    self._pending.remove(job_id)
            return self.update(job, state="cancelled", stage="cancelled")
        return self.get(job_id)

    def is_cancelled(self, job_id: str) -> bool:
        return job_id in self._cancel

    def wait(self, job_id: str, timeout: float) -> Job | None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                job = self._jobs.get(job_id)
                left = deadline - time.monotonic()
                if job is None or job.state in FINAL or left <= 0:
                    return Job(**asdict(job)) if job else None
                self._cond.wait(timeout=left)

    def remember(self, key: str, value: dict, ttl_s: int = 86400) -> dict:
        with self._cond:
            return self._idem.setdefault(key, value)

    def forget(self, key: str) -> None:
        with self._cond:
            self._idem.pop(key, None)

    def take_token(self, who: str, rate: float, burst: int) -> float:
        return self._buckets.take(who, rate, burst)

    def recall(self, key: str) -> dict | None:
        return self._idem.get(key)

    def stats(self) -> dict[str, Any]:
        with self._cond:
            by_state = {state: 0 for state in STATES}
            for job in self._jobs.values():
                by_state[job.state] += 1
            return {"queue_depth": len(self._pending), "jobs_by_state": by_state, "frames_embedded": self._frames}

    def recent(self, limit: int = 50) -> list[Job]:
        with self._cond:
            newest = sorted(self._jobs.values(), key=lambda j: -j.created)[:limit]
            return [Job(**asdict(j)) for j in newest]

    def count_frames(self, n: int) -> None:
        with self._cond:
            self._frames += n

    def heartbeat(self, worker: str, ttl_s: float = 15.0) -> None:
        self._beats[worker] = time.monotonic() + ttl_s

    def workers_alive(self) -> int:
        now = time.monotonic()
        return sum(1 for until in self._beats.values() if until > now)

    def next(self, worker: str, block_s: float = 1.0) -> tuple[str, Job] | None:
        with self._cond:
            if not self._pending:
                self._cond.wait(timeout=block_s)
            if not self._pending:
                return None
            job_id = self._pending.pop(0)
            return job_id, self._jobs[job_id]

    def keepalive(self, worker: str, entry: str) -> None:
        pass

    def ack(self, entry: str) -> None:
        pass


def make_queue(settings) -> JobQueue:
    if settings.redis_url:
        return RedisQueue(settings.redis_url, settings.redis_prefix, settings.job_visibility_s)
    return LocalQueue()
