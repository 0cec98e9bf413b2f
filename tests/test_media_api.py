"""What the web UI reads, over HTTP from a real uvicorn server on real clips: key frames, thumbnails, the kept
source with Range requests, an indexed pair's evidence, the matrices of a query, and the cleanup of all of it."""
from __future__ import annotations

import base64
import io
import signal

import numpy as np
import pytest
from PIL import Image

from bench.service_procs import free_port, service_env, start_api, wait_job
from tests.clips import BIKES, CAR, clip, variant


def upload(client, *paths, headers=None):
    r = client.post("/index", files=[("files", (p.name, p.read_bytes(), "video/mp4")) for p in paths],
                    headers=headers)
    assert r.status_code == 202, r.text
    return [wait_job(client, j["job_id"], headers=headers) for j in r.json()["jobs"]]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    env = service_env(root / "data", free_port(), None)
    api, client = start_api(env, root / "api.log")
    jobs = upload(client, clip(BIKES), clip(CAR))
    assert [j["state"] for j in jobs] == ["done", "done"], jobs
    ids = {BIKES: jobs[0]["result"]["video_id"], CAR: jobs[1]["result"]["video_id"]}
    yield {"client": client, "ids": ids, "root": root}
    client.close()
    api.kill(signal.SIGTERM)


def jpeg(body: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(body))
    assert image.format == "JPEG"
    return image


def test_thumbnail_and_key_frames_are_real_frames(server):
    client, vid = server["client"], server["ids"][BIKES]
    r = client.get(f"/videos/{vid}/thumbnail")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = jpeg(r.content)
    assert thumb.height == 96 and np.asarray(thumb).std() > 10  # a picture, not a flat frame
    listed = client.get(f"/videos/{vid}/keyframes").json()
    assert len(listed["times"]) >= 8 and listed["times"] == sorted(listed["times"])
    assert listed["times"][-1] > 8.0  # spread over the 10 s clip
    r = client.get(f"/videos/{vid}/frames", params={"t": 5.2})
    assert r.status_code == 200 and abs(float(r.headers["x-frame-time"]) - 5.2) <= 1.0
    first, later = (np.asarray(jpeg(client.get(f"/videos/{vid}/frames", params={"t": t}).content), float)
                    for t in (0.0, 9.0))
    assert np.abs(first - later).mean() > 5  # different times give different frames
    missing = client.get("/videos/nosuchvideo/thumbnail")
    assert missing.status_code == 404 and "video_id" in missing.json()["error"]["message"]
    assert client.get(f"/videos/{vid}/frames", params={"t": -1}).status_code == 422


def test_kept_source_is_served_with_ranges(server):
    client, vid = server["client"], server["ids"][CAR]
    original = clip(CAR).read_bytes()
    whole = client.get(f"/videos/{vid}/media")
    assert whole.status_code == 200 and whole.content == original
    assert whole.headers["accept-ranges"] == "bytes" and whole.headers["content-type"] == "video/mp4"
    part = client.get(f"/videos/{vid}/media", headers={"Range": "bytes=100-1099"})
    assert part.status_code == 206 and part.content == original[100:1100]
    assert part.headers["content-range"] == f"bytes 100-1099/{len(original)}"
    tail = client.get(f"/videos/{vid}/media", headers={"Range": "bytes=-50"})
    assert tail.status_code == 206 and tail.content == original[-50:]
    beyond = client.get(f"/videos/{vid}/media", headers={"Range": f"bytes={len(original) + 10}-"})
    assert beyond.status_code == 416


def test_compare_gives_the_matrix_segments_and_aligned_pairs(server):
    client, ids = server["client"], server["ids"]
    jobs = upload(client, variant(BIKES, 1, server["root"]))
    copy = jobs[0]["result"]["video_id"]
    r = client.get(f"/videos/{copy}/compare/{ids[BIKES]}")
    assert r.status_code == 200, r.text
    body = r.json()
    m = body["matrix"]
    data = np.frombuffer(base64.b64decode(m["data"]), dtype=np.uint8).reshape(m["rows"], m["cols"])
    assert m["rows"] == len(m["query_times"]) and m["cols"] == len(m["target_times"])
    assert body["segments"] and m["pairs"] and np.mean([p["similarity"] for p in m["pairs"]]) > 0.5
    # the copy is the same clip: its diagonal is brighter than the rest of the matrix
    n = min(data.shape)
    assert data[np.arange(n), np.arange(n)].mean() > data.mean() + 20
    other = client.get(f"/videos/{copy}/compare/{ids[CAR]}").json()
    assert other["score"] < body["score"] and (other["confidence"] or 0) < (body["confidence"] or 1)
    missing = client.get(f"/videos/{copy}/compare/nosuch")
    assert missing.status_code == 404 and "other_id" in missing.json()["error"]["message"]


def test_a_query_can_carry_its_matrices(server):
    client, ids = server["client"], server["ids"]
    q = client.post("/query", files={"file": ("q.mp4", variant(CAR, 2, server["root"]).read_bytes())},
                    data={"matrices": "true", "top_k": "2"})
    assert q.status_code == 200, q.text
    first = q.json()["results"][0]
    assert first["id"] == ids[CAR] and first["matrix"]["rows"] > 0 and first["matrix"]["segments"]
    plain = client.post("/query", files={"file": ("q.mp4", clip(CAR).read_bytes())}).json()
    assert "matrix" not in plain["results"][0]


def test_delete_removes_key_frames_and_source(server):
    client = server["client"]
    jobs = upload(client, variant(CAR, 3, server["root"]))
    vid = jobs[0]["result"]["video_id"]
    folder = server["root"] / "data" / "media" / vid
    assert (folder / "keyframes.zip").is_file() and (folder / "source").is_file()
    assert client.delete(f"/videos/{vid}").status_code == 204
    assert not folder.exists()
    assert client.get(f"/videos/{vid}/thumbnail").status_code == 404


def test_without_kept_uploads_the_source_is_refused_with_a_reason(tmp_path):
    env = service_env(tmp_path / "data", free_port(), None, HAPVR_KEEP_UPLOADS="false")
    api, client = start_api(env, tmp_path / "api.log")
    try:
        vid = upload(client, clip(CAR))[0]["result"]["video_id"]
        r = client.get(f"/videos/{vid}/media")
        assert r.status_code == 404 and r.json()["error"]["code"] == "source_not_kept"
        assert client.get(f"/videos/{vid}/thumbnail").status_code == 200  # key frames are still there
        assert not list((tmp_path / "data" / "uploads").glob("*.mp4"))  # the upload was not left behind
    finally:
        client.close()
        api.kill(signal.SIGTERM)


def test_key_frames_keep_the_displayed_aspect_of_a_landscape_and_a_phone_video(tmp_path):
    """The encoder's frames are squashed square; key frames are shown at the video's displayed aspect,
    turned for a file whose display matrix rotates it (as phones write them)."""
    from indexer.engine import Engine
    from config.settings import Settings
    from tests.videos import rotate_mp4

    engine = Engine(Settings(data=tmp_path / "data", cache_dir=tmp_path / "cache"))
    landscape = engine.index(clip(CAR)).record  # 480 x 270
    portrait = engine.index(rotate_mp4(clip(CAR), tmp_path / "phone.mp4")).record
    wide, tall = engine.keyframes(landscape.id), engine.keyframes(portrait.id)
    assert (wide.width, wide.height) == (171, 96) and (tall.width, tall.height) == (54, 96)
    assert jpeg(tall.jpeg(0)).size == (54, 96)
