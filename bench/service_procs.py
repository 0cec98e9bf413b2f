"""Real processes for the service tests and the load test: a private redis-server, uvicorn API servers and
workers. It lives in bench/ (installed) rather than tests/ so that `bench.load_test` does not import the test
suite."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]  # the checkout: servers run `python -m service...` from it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """redis-server on a free port with AOF on, so a restart keeps the queue (as the compose file configures)."""

    def __init__(self, folder: Path):
        self.folder, self.port = folder, free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "RedisServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _redis_up(self.port), 10, "redis-server did not start")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=10)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


#: the PostgreSQL server the cluster-mode tests use (`.ci/run` starts it when it is down)
POSTGRES_ADMIN_URL = os.environ.get("HAPVR_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")


class PostgresDatabase:
    """A fresh database on the PostgreSQL server at POSTGRES_ADMIN_URL, dropped again by `drop`."""

    def __init__(self, name: str | None = None):
        import uuid

        self.name = name or f"hapvr_test_{uuid.uuid4().hex[:10]}"
        base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
        self.url = f"{base}/{self.name}"

    def _admin(self):
        import psycopg

        try:
            return psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise AssertionError(f"no PostgreSQL at {POSTGRES_ADMIN_URL} (bash .ci/run starts one; "
                                 f"HAPVR_TEST_POSTGRES names another): {exc}") from None

    def create(self) -> "PostgresDatabase":
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')
        return self

    def drop(self) -> None:
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


class S3Server:
    """A real S3 HTTP API (moto's server) on a free port, with AWS credentials for it in `env`."""

    def __init__(self, log: Path):
        self.port, self.log = free_port(), log
        self.proc: subprocess.Popen | None = None
        self.env = {"AWS_ACCESS_KEY_ID": "hapvr-test", "AWS_SECRET_ACCESS_KEY": "hapvr-test-secret",
                    "AWS_DEFAULT_REGION": "us-east-1"}

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "S3Server":
        with open(self.log, "ab") as handle:
            self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                         stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)

        def up() -> bool:
            try:
                return httpx.get(self.endpoint, timeout=1).status_code < 500
            except httpx.HTTPError:
                return False

        wait_for(up, 30, f"moto.server did not start; log: {self.log}")
        return self

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
                            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def _redis_up(port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.2).ping())
    except redis.RedisError:
        return False


def wait_for(check, timeout: float, message: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(message)


class Proc:
    """A service process (`python -m service` or `python -m service.worker`) with its env."""

    def __init__(self, module: str, env: dict[str, str], log: Path):
        self.module, self.env, self.log = module, env, log
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Proc":
        with open(self.log, "ab") as handle:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=self.env,
                                         stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT)
        return self

    def kill(self, sig: int = signal.SIGKILL, grace: float = 30) -> None:
        """Send `sig`. A process still running `grace` seconds later is killed outright: a worker stopped
        with SIGTERM first finishes its job, which on a slow 2-core VM can outlast the grace period, and a
        teardown must not fail for that (no test here times a graceful stop)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


def service_env(data: Path, port: int, redis_url: str | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HAPVR_DATA": str(data), "HAPVR_PORT": str(port), "HAPVR_LOG_LEVEL": "WARNING",
           "HAPVR_JOB_VISIBILITY_S": "3", "PYTHONUNBUFFERED": "1"}
    env.setdefault("HAPVR_CACHE_DIR", str(data.parent / "cache"))
    env.pop("HAPVR_REDIS_URL", None)
    if redis_url:
        env["HAPVR_REDIS_URL"] = redis_url
    env.update(extra)
    return env


def start_api(env: dict[str, str], log: Path) -> tuple[Proc, httpx.Client]:
    api = Proc("service", env, log).start()
    client = httpx.Client(base_url=f"http://127.0.0.1:{env['HAPVR_PORT']}", timeout=120)

    def up() -> bool:
        try:
            return client.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, 120, f"API did not start; log: {log.read_text()[-2000:] if log.exists() else ''}")
    return api, client


def wait_job(client: httpx.Client, job_id: str, timeout: float = 180, headers: dict | None = None) -> dict:
    def final():
        job = client.get(f"/jobs/{job_id}", headers=headers).json()
        return job if job.get("state") in ("done", "failed", "cancelled") else None

    return wait_for(final, timeout, f"job {job_id} did not finish", interval=0.2)
