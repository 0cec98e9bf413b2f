"""The API under misuse, on a real uvicorn server: bodies over their limits, bad JSON, clients that hang up,
rate limits, re-uploads after a delete, cancelled uploads, and `python -m service --help`."""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.service_procs import free_port, service_env, start_api, wait_for, wait_job
from tests.clips import ASL, BIKES, CLASSROOM, ROOT, clip, long_clip, variant


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    """An embedded-mode API (its own worker thread, no Redis) with small body limits and a strict rate limit
    for one of its two keys' tests."""
    root = tmp_path_factory.mktemp("hardening")
    env = service_env(root / "data", free_port(), None, HAPVR_API_KEYS="alpha,beta",
                      HAPVR_MAX_JSON_BYTES=str(64 * 1024), HAPVR_MAX_REQUEST_BYTES=str(8 * 1024 * 1024),
                      HAPVR_MAX_UPLOAD_BYTES=str(4 * 1024 * 1024), HAPVR_RATE_LIMIT="50", HAPVR_RATE_BURST="200",
                      HAPVR_IMPORT_ROOT=str(root / "imports"))
    (root / "imports").mkdir()
    log = root / "api.log"
    proc, client = start_api(env, log)
    client.headers["Authorization"] = "Bearer alpha"
    yield {"root": root, "env": env, "client": client, "log": log, "data": root / "data"}
    client.close()
    proc.kill(15)


def upload(client, path: Path, **kw):
    return client.post("/index", files=[("files", (path.name, path.read_bytes(), "video/mp4"))], **kw)


def raw_request(port: int, head: bytes, body: bytes = b"", read: bool = True, timeout: float = 10) -> bytes:
    """Send bytes on a plain socket (what httpx will not do: lie about Content-Length, hang up mid-body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head + body)
        if not read:
            return b""
        chunks = []
        try:
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


def test_a_body_that_declares_more_than_its_limit_is_refused_before_it_is_read(api):
    port = int(api["env"]["HAPVR_PORT"])
    head = (b"POST /query HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alpha\r\nContent-Type: application/json\r\n"
            b"Content-Length: 300000000\r\n\r\n")
    start = time.monotonic()
    answer = raw_request(port, head, b'{"video_id": "')  # 300 MB announced, 14 bytes sent: no hang
    assert time.monotonic() - start < 5
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too_large"' in answer
    multipart = client_multipart_head(port, 9 * 1024 * 1024)  # over HAPVR_MAX_REQUEST_BYTES
    assert raw_request(port, multipart).startswith(b"HTTP/1.1 413")


def client_multipart_head(port: int, length: int) -> bytes:
    return (f"POST /index HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer alpha\r\nContent-Type: multipart/form-data; "
            f"boundary=b\r\nContent-Length: {length}\r\n\r\n").encode()


def test_a_chunked_body_over_its_limit_is_cut_off_while_it_streams(api):
    client = api["client"]

    def big_json():  # 2 MB of JSON with no Content-Length: only counting the bytes as they come can stop it
        yield b'{"video_id": "'
        for _ in range(32):
            yield b"x" * 65536
        yield b'"}'

    r = client.post("/query", content=big_json(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_large"
    assert client.get("/healthz").status_code == 200


def test_a_wrongly_shaped_json_body_gets_an_error_naming_the_field(api):
    client = api["client"]
    r = client.post("/index", json={"files": [{"pathx": "a.mp4"}]})
    assert r.status_code == 422
    assert r.json()["error"] == {"code": "invalid_request", "message": "files.0.path: Field required"}
    r = client.post("/query", json={"video_id": "x", "top_k": 0})
    assert r.status_code == 422 and r.json()["error"]["message"].startswith("top_k:")
    r = client.post("/query", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["message"] == "body: not valid JSON"


def test_a_client_that_hangs_up_mid_upload_is_no_error_and_leaves_no_file(api):
    port = int(api["env"]["HAPVR_PORT"])
    part = (b"--b\r\nContent-Disposition: form-data; name=\"files\"; filename=\"x.mp4\"\r\n"
            b"Content-Type: video/mp4\r\n\r\n") + clip(BIKES).read_bytes()[:200_000]
    raw_request(port, client_multipart_head(port, 1_000_000), part, read=False)  # 1 MB announced, 0.2 MB sent
    time.sleep(1.0)
    assert api["client"].get("/healthz").status_code == 200
    log = api["log"].read_text()
    assert "ERROR" not in log and "Traceback" not in log, log[-3000:]
    assert not list((api["data"] / "uploads").glob("*"))


def test_rate_limits_answer_429_with_retry_after_per_key(tmp_path):
    env = service_env(tmp_path / "data", free_port(), None, HAPVR_API_KEYS="alpha,beta", HAPVR_RATE_LIMIT="1",
                      HAPVR_RATE_BURST="3")
    proc, client = start_api(env, tmp_path / "api.log")
    try:
        alpha, beta = {"Authorization": "Bearer alpha"}, {"Authorization": "Bearer beta"}
        codes = [client.get("/videos", headers=alpha).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        limited = client.get("/videos", headers=alpha)
        assert limited.status_code == 429 and limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 2
        assert client.get("/videos", headers=beta).status_code == 200  # each key has its own bucket
        assert client.get("/healthz").status_code == 200  # health checks are never limited
        time.sleep(int(limited.headers["Retry-After"]))
        assert client.get("/videos", headers=alpha).status_code == 200  # a token came back
    finally:
        client.close()
        proc.kill(15)


def test_reupload_after_delete_indexes_the_file_again(api, made):
    client = api["client"]
    path = variant(ASL, 7, made)
    first = wait_job(client, upload(client, path).json()["jobs"][0]["job_id"])
    assert first["state"] == "done" and first["result"]["created"]
    old_id = first["result"]["video_id"]
    assert client.delete(f"/videos/{old_id}").status_code == 204
    again = upload(client, path).json()["jobs"][0]
    assert again["job_id"] != first["id"]
    job = wait_job(client, again["job_id"])
    assert job["state"] == "done" and job["result"]["created"] is True and job["result"]["video_id"] != old_id
    assert client.get(f"/videos/{job['result']['video_id']}").status_code == 200


def test_a_cancelled_queued_job_leaves_no_upload_behind(api, made):
    client = api["client"]
    busy = upload(client, long_clip(made)).json()["jobs"][0]["job_id"]  # keeps the one worker thread busy
    queued = upload(client, variant(CLASSROOM, 8, made)).json()["jobs"][0]["job_id"]
    cancelled = client.delete(f"/jobs/{queued}").json()
    assert cancelled["state"] == "cancelled" and "payload" not in cancelled  # no server paths in answers
    uploads = api["data"] / "uploads"
    assert not [p for p in uploads.glob("*") if "variant8" in p.name]
    assert wait_job(client, busy)["state"] == "done"
    wait_for(lambda: not list(uploads.glob("*")), 10, f"uploads left: {list(uploads.glob('*'))}")


def test_python_m_service_help_prints_usage_and_starts_nothing():
    proc = subprocess.run([sys.executable, "-m", "service", "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=30)
    assert proc.returncode == 0 and "--port" in proc.stdout and "HAPVR_" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "service", "--port", "x"], cwd=ROOT, capture_output=True, text=True,
                         timeout=30)
    assert bad.returncode == 2 and "invalid int value" in bad.stderr

