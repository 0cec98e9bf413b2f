"""One suite per seam (indexer/contracts.py, service.jobs.JobQueue), run against every backend: the catalog
on SQLite and on a real PostgreSQL server, the feature store on files and on a real S3 HTTP server (moto),
the job queue in process and on a real Redis. Then the whole engine in cluster mode (PostgreSQL + S3) on
real videos, against the embedded default, and bad configuration failing at start with one line."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from bench.service_procs import PostgresDatabase, RedisServer, S3Server
from indexer.catalog import SqliteCatalog
from indexer.catalog_postgres import PostgresCatalog, redact
from indexer.contracts import Catalog, FeatureStore, MediaStore
from indexer.engine import Engine
from indexer.errors import InputError
from indexer.features import LocalFeatures
from indexer.media import LocalMedia, S3Media
from indexer.features_s3 import S3Features
from service.jobs import FINAL, Job, JobQueue, LocalQueue, RedisQueue, new_job_id
from tests.clips import BIKES, BOTTLE, BOTTLE_PREVIEW, CAR, CLASSROOM, PEOPLE, clip
from tests.test_cli import ROOT
from tests.test_engine import make_settings

MODEL = "test-model-v1"


@pytest.fixture(scope="module")
def s3(tmp_path_factory, monkeypatch_module):
    server = S3Server(tmp_path_factory.mktemp("s3") / "moto.log").start()
    for key, value in server.env.items():
        monkeypatch_module.setenv(key, value)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.fixture
def pg_url():
    db = PostgresDatabase().create()
    yield db.url
    db.drop()


@pytest.fixture(params=["sqlite", "postgresql"])
def catalog_factory(request, tmp_path):
    """Opens the catalog under test (again, as another process would) for a model version."""
    opened: list[Catalog] = []
    if request.param == "sqlite":
        def make(model=MODEL):
            opened.append(SqliteCatalog(tmp_path, model))
            return opened[-1]
    else:
        db = PostgresDatabase().create()

        def make(model=MODEL):
            opened.append(PostgresCatalog(db.url, model))
            return opened[-1]
    yield make
    for catalog in opened:
        catalog.close()
    if request.param == "postgresql":
        db.drop()


@pytest.fixture(params=["local", "s3"])
def features(request, tmp_path, s3) -> FeatureStore:
    if request.param == "local":
        return LocalFeatures(tmp_path / "features")
    bucket = s3.bucket(f"contract-{uuid.uuid4().hex[:8]}")
    return S3Features(f"s3://{bucket}/collection/a", endpoint=s3.endpoint, cache_bytes=1 << 20)


def add(catalog: Catalog, video_id: str, sha: str = "0" * 64, duration: float = 10.0, **metadata) -> int:
    with catalog.write_lock():
        catalog.insert(video_id, source=f"/videos/{video_id}.mp4", external_id=None, sha256=sha, duration=duration,
                       fps=25.0, width=640, height=360, codec="h264",
                       timestamps=np.arange(int(duration), dtype=np.float32), metadata=metadata or None)
    return catalog.get(video_id).seq


# ----- catalog
def test_catalog_rows_round_trip(catalog_factory):
    catalog = catalog_factory()
    assert isinstance(catalog, Catalog)
    seq = add(catalog, "v1", sha="a" * 64, duration=12.5, team="news")
    record = catalog.get("v1")
    assert record.seq == seq and record.duration == 12.5 and record.frames == 12 and record.fps == 25.0
    assert record.timestamps.dtype == np.float32 and record.timestamps.tolist() == list(range(12))
    assert record.metadata == {"team": "news"} and record.model_version == MODEL
    assert catalog.by_sha256("a" * 64).id == "v1" and catalog.by_sha256("b" * 64) is None
    assert catalog.get("nope") is None
    assert catalog.total_duration() == 12.5


def test_catalog_pages_filters_and_counts(catalog_factory):
    catalog = catalog_factory()
    seqs = [add(catalog, f"v{i}", team="news" if i % 2 else "archive") for i in range(7)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 7
    assert [r.id for r in catalog.list(offset=2, limit=3)] == ["v2", "v3", "v4"]
    assert catalog.count() == 7 and catalog.count({"team": "news"}) == 3
    assert [r.id for r in catalog.list(metadata_filter={"team": "archive"})] == ["v0", "v2", "v4", "v6"]
    assert catalog.count({"team": "nobody"}) == 0 and catalog.count({"other": "news"}) == 0
    # a name search: case-insensitive substring, combined with metadata, LIKE wildcards taken literally
    assert [r.id for r in catalog.list(name="V3")] == ["v3"] and catalog.count(name="VIDEOS/") == 7
    assert catalog.count({"team": "news"}, name="v1") == 1 and catalog.count({"team": "archive"}, name="v1") == 0
    assert catalog.count(name="%") == 0 and catalog.count(name="v_") == 0
    assert set(catalog.by_seqs(seqs[:3])) == set(seqs[:3])
    assert set(catalog.by_ids(["v1", "v5", "missing"])) == {"v1", "v5"}
    assert catalog.ids() == {f"v{i}" for i in range(7)}
    assert catalog.seqs_after(seqs[4]) == [(seqs[5], "v5"), (seqs[6], "v6")] and catalog.max_seq() == seqs[6]


def test_catalog_deletions_are_logged_in_order(catalog_factory):
    catalog = catalog_factory()
    seqs = [add(catalog, f"v{i}") for i in range(4)]
    removed, gen0 = catalog.deletions_after(0)
    assert removed == [] and gen0 == 0
    with catalog.write_lock():
        catalog.delete(seqs[2])
        catalog.delete(seqs[0])
    removed, gen = catalog.deletions_after(0)
    assert removed == [seqs[2], seqs[0]] and gen > 0
    assert catalog.deletions_after(gen) == ([], gen)
    assert catalog.get("v2") is None and catalog.count() == 2
    # a new row never reuses a deleted seq: the coarse index tells videos apart by seq
    assert add(catalog, "v9") > seqs[-1]


def test_catalog_scans_and_pairs(catalog_factory):
    catalog = catalog_factory()
    a, b, c = (add(catalog, f"v{i}") for i in range(3))
    assert catalog.unscanned("m1") == [a, b, c]
    segs = [{"a_start": 0.0, "a_end": 1.0, "b_start": 0.0, "b_end": 1.0, "score": 0.5}]
    catalog.record_scan(a, "m1", saturated=False, pairs=[(a, b, 0.9, segs)])
    catalog.record_scan(b, "m1", saturated=True, pairs=[(a, b, 0.7, []), (b, c, 0.4, [])])
    pairs, scanned, saturated = catalog.scanned_pairs()
    assert sorted(pairs) == [(a, b, 0.9, segs), (b, c, 0.4, [])]  # the higher confidence of a pair stays
    assert scanned == {a, b} and saturated == {b}
    assert catalog.unscanned("m1") == [c]
    with catalog.write_lock():
        catalog.delete(b)
    pairs, scanned, _ = catalog.scanned_pairs()
    assert pairs == [] and scanned == {a}
    assert catalog.unscanned("m2") == [a, c]  # another model: every scan is stale


def test_catalog_refuses_another_model_and_keeps_its_identity(catalog_factory):
    first = catalog_factory()
    add(first, "v1")
    identity = first.identity()
    again = catalog_factory()
    assert again.identity() == identity and again.count() == 1
    with pytest.raises(InputError) as err:
        catalog_factory("another-model")
    assert err.value.code == "incompatible_store" and "another-model" in err.value.message
    assert catalog_factory(None).model_version == MODEL  # opened whatever its model


def test_catalog_writers_in_two_connections_exclude_each_other(catalog_factory):
    """Two processes' catalogs: while one holds the write lock, the other's writer waits, so rows commit
    in seq order."""
    import threading

    one, two = catalog_factory(), catalog_factory()
    order: list[str] = []
    entered = threading.Event()

    def second():
        entered.wait()
        with two.write_lock():
            order.append("two")

    thread = threading.Thread(target=second)
    thread.start()
    with one.write_lock():
        entered.set()
        time.sleep(0.5)
        order.append("one")
    thread.join(10)
    assert order == ["one", "two"]


# ----- feature store
def test_features_round_trip_list_size_and_delete(features):
    assert isinstance(features, FeatureStore)
    rng = np.random.default_rng(0)
    arrays = {f"vid{i}": rng.standard_normal((5 + i, 9, 16)).astype(np.float32) for i in range(3)}
    for video_id, array in arrays.items():
        features.put(video_id, array)
    for video_id, array in arrays.items():
        got = features.get(video_id)
        assert got.dtype == np.float16 and got.shape == array.shape
        np.testing.assert_array_equal(got, array.astype(np.float16))
        np.testing.assert_array_equal(features.get(video_id), got)  # a second read (cached where there is a cache)
    listed = dict(features.list())
    assert set(listed) == set(arrays) and all(0 <= age < 300 for age in listed.values())
    assert features.size() >= sum(a.size * 2 for a in arrays.values())
    features.delete("vid1")
    features.delete("vid1")  # deleting twice is not an error
    with pytest.raises(KeyError):
        features.get("vid1")
    assert set(dict(features.list())) == {"vid0", "vid2"}


def test_s3_feature_cache_is_bounded(s3):
    bucket = s3.bucket(f"cache-{uuid.uuid4().hex[:8]}")
    store = S3Features(f"s3://{bucket}", endpoint=s3.endpoint, cache_bytes=3 * 9 * 64 * 2 * 10)
    for i in range(6):
        store.put(f"v{i}", np.full((10, 9, 64), i, dtype=np.float32))
    for i in range(6):
        assert store.get(f"v{i}")[0, 0, 0] == i
    assert len(store._cache) == 3 and store._cached <= store.cache_bytes
    assert list(store._cache) == ["v3", "v4", "v5"]  # the least recently used left first


# ----- media store


@pytest.fixture(params=["local", "s3"])
def media(request, tmp_path, s3) -> MediaStore:
    if request.param == "local":
        return LocalMedia(tmp_path / "media")
    bucket = s3.bucket(f"media-{uuid.uuid4().hex[:8]}")
    return S3Media(f"s3://{bucket}/collection/media", endpoint=s3.endpoint)


def test_media_round_trip_ranges_list_and_delete(media, tmp_path):
    assert isinstance(media, MediaStore)
    body = bytes(range(256)) * 40
    media.put("vid0", "keyframes.zip", b"zip bytes")
    source = tmp_path / "upload.mp4"
    source.write_bytes(body)
    media.put_file("vid0", "source", source)
    media.put("vid1", "keyframes.zip", b"other")
    assert media.size("vid0", "source") == len(body) and media.size("vid0", "keyframes.zip") == 9
    assert media.size("vid1", "source") is None
    assert media.read("vid0", "source") == body
    assert media.read("vid0", "source", 100, 612) == body[100:612]
    assert media.read("vid0", "source", len(body) - 7) == body[-7:]
    assert set(dict(media.list())) == {"vid0", "vid1"} and all(0 <= a < 300 for _, a in media.list())
    with pytest.raises(ValueError):  # names are a closed set: nothing user-supplied reaches a path or a key
        media.put("vid0", "../escape", b"x")
    media.delete("vid0")
    media.delete("vid0")
    with pytest.raises(KeyError):
        media.read("vid0", "source")
    assert set(dict(media.list())) == {"vid1"}


# ----- job queue
@pytest.fixture(params=["local", "redis"])
def queue(request, tmp_path) -> JobQueue:
    if request.param == "local":
        yield LocalQueue()
        return
    redis = RedisServer(tmp_path / "redis").start()
    yield RedisQueue(redis.url, prefix=f"contract{uuid.uuid4().hex[:6]}", visibility_s=1.0)
    redis.stop()


def test_queue_delivers_updates_and_finishes_jobs(queue):
    assert isinstance(queue, JobQueue) and queue.ping()
    job = queue.submit(Job(id=new_job_id(), kind="index", payload={"path": "/x.mp4"}))
    assert queue.get(job.id).state == "queued" and queue.get("missing") is None
    entry, got = queue.next("w1", block_s=2)
    assert got.id == job.id and got.payload == {"path": "/x.mp4"}
    queue.update(got, state="running", stage="embedding", progress=0.5)
    assert queue.get(job.id).progress == 0.5
    assert queue.wait(job.id, timeout=0.2).state == "running"  # not final: returned as it is
    queue.update(got, state="done", stage="done", result={"video_id": "v"})
    queue.ack(entry)
    final = queue.wait(job.id, timeout=5)
    assert final.state in FINAL and final.result == {"video_id": "v"}
    assert queue.next("w1", block_s=0.2) is None


def test_queue_cancels_a_queued_job(queue):
    job = queue.submit(Job(id=new_job_id(), kind="query", payload={}))
    assert queue.cancel(job.id).state == "cancelled" and queue.is_cancelled(job.id) in (True, False)
    assert queue.next("w1", block_s=0.2) is None  # a cancelled job is never run
    assert queue.cancel("missing") is None


def test_redis_queue_delivers_again_the_job_of_a_dead_worker(tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        queue = RedisQueue(redis.url, prefix="redeliver", visibility_s=0.5)
        job = queue.submit(Job(id=new_job_id(), kind="index", payload={}))
        first, _ = queue.next("dies", block_s=1)
        time.sleep(0.8)  # "dies" never calls keepalive
        again = queue.next("lives", block_s=1)
        assert again is not None and again[1].id == job.id
    finally:
        redis.stop()


# ----- the engine in cluster mode
FILES = [BIKES, CAR, BOTTLE, BOTTLE_PREVIEW, CLASSROOM, PEOPLE]


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    engine = Engine(make_settings(tmp_path_factory.mktemp("embedded")))
    assert all(o.created for _, o in engine.index_many([clip(n) for n in FILES]))
    return engine


def cluster_settings(root, pg: str, features: str, endpoint: str):
    return make_settings(root).model_copy(update={"catalog": pg, "features": features, "s3_endpoint": endpoint})


def test_the_engine_on_postgresql_and_s3_answers_like_the_embedded_default(embedded, s3, pg_url, tmp_path):
    """Two engines with their own empty data folders share one collection through PostgreSQL and S3: what
    one indexes the other finds, with the ids, order and scores (within 1e-4) of the embedded default."""
    bucket = s3.bucket(f"engine-{uuid.uuid4().hex[:8]}")
    writer = Engine(cluster_settings(tmp_path / "host-a", pg_url, f"s3://{bucket}/features", s3.endpoint))
    outcomes = list(writer.index_many([clip(n) for n in FILES]))
    assert all(o.created for _, o in outcomes)
    assert not list((tmp_path / "host-a").glob("store.sqlite*")) and not (tmp_path / "host-a" / "features").exists() \
        or not any((tmp_path / "host-a" / "features").iterdir())
    reader = Engine(cluster_settings(tmp_path / "host-b", pg_url, f"s3://{bucket}/features", s3.endpoint))
    assert reader.store.count() == len(FILES)
    for name in (BIKES, BOTTLE_PREVIEW):
        want = embedded.query(clip(name), top_k=5)["results"]
        got = reader.query(clip(name), top_k=5)["results"]
        assert [r["source"] for r in got] == [r["source"] for r in want]
        assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(got, want) if a["score"] is not None)
        assert [r.get("exact_duplicate") for r in got] == [r.get("exact_duplicate") for r in want]
    # a delete on one host reaches the other's coarse index and the object store
    victim = reader.store.by_sha256(outcomes[0][1].record.sha256)
    assert writer.delete(victim.id)
    assert all(r["id"] != victim.id for r in reader.query(clip(BIKES), top_k=5)["results"])
    keys = [o["Key"] for o in s3.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
    features = [k for k in keys if k.endswith(".npy")]
    keyframes = [k for k in keys if k.startswith("features/media/") and k.endswith("/keyframes.zip")]
    assert len(features) == len(keyframes) == len(FILES) - 1 and not any(victim.id in k for k in keys)
    assert reader.keyframes(outcomes[1][1].record.id).times  # any host reads another's key frames


def test_orphan_features_in_s3_are_removed(s3, pg_url, tmp_path):
    bucket = s3.bucket(f"orphans-{uuid.uuid4().hex[:8]}")
    engine = Engine(cluster_settings(tmp_path, pg_url, f"s3://{bucket}", s3.endpoint))
    engine.index(clip(CAR))
    orphan = engine.store.write_features(np.zeros((3, 9, 512), dtype=np.float16))  # a crash before the row
    engine.store.media.put(orphan, "keyframes.zip", b"written beside the features")
    assert len(list(engine.store.features.list())) == 2 and len(list(engine.store.media.list())) == 2
    assert engine.store.remove_orphans(min_age_s=0) == 1
    kept = engine.store.list()[0].id
    assert [v for v, _ in engine.store.features.list()] == [kept]
    assert [v for v, _ in engine.store.media.list()] == [kept]  # the committed video keeps its key frames

    # a Prometheus scrape every few seconds must not list the bucket every time
    from service.jobs import LocalQueue
    from service.metrics import Metrics

    listings = []
    engine.store.features.client.meta.events.register("before-call.s3.ListObjectsV2",
                                                      lambda **kw: listings.append(kw))
    metrics = Metrics(LocalQueue(), engine)
    bodies = [metrics.render()[0].decode() for _ in range(5)]
    assert len(listings) == 1, len(listings)
    assert all("hapvr_index_videos 1.0" in b for b in bodies)


def test_a_recreated_catalog_does_not_reuse_a_stale_coarse_index(tmp_path, s3):
    """A data folder whose FAISS files were built for another catalog rebuilds them instead of reporting
    rows the catalog never had."""
    bucket = s3.bucket(f"stale-{uuid.uuid4().hex[:8]}")
    first, second = PostgresDatabase().create(), PostgresDatabase().create()
    try:
        one = Engine(cluster_settings(tmp_path, first.url, f"s3://{bucket}/one", s3.endpoint))
        one.index(clip(BIKES))
        one.save()
        two = Engine(cluster_settings(tmp_path, second.url, f"s3://{bucket}/two", s3.endpoint))
        record = two.index(clip(CAR)).record  # seq 1 again, in the new catalog
        assert record.seq == one.store.list()[0].seq == 1
        assert two.coarse.size == record.frames  # the BIKES vectors of the old seq 1 are gone
        top = two.query(clip(CAR), top_k=1)["results"][0]
        assert top["id"] == record.id and top["segments"], top
    finally:
        first.drop()
        second.drop()


# ----- bad configuration: one line at start
def hapvr(*args, env):
    return subprocess.run([sys.executable, "-m", "indexer.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=120)


def test_an_unreachable_postgresql_fails_at_start_with_one_line(tmp_path):
    import os

    env = {**os.environ, "HAPVR_CATALOG": "postgresql://hapvr:secret@127.0.0.1:1/nowhere",
           "HAPVR_CACHE_DIR": str(tmp_path / "cache")}
    proc = hapvr("list", "--data", str(tmp_path), env=env)
    assert proc.returncode == InputError.EXIT_CODES["backend_unavailable"], proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "catalog postgresql://hapvr:***@127.0.0.1:1/nowhere" in lines[0], proc.stderr
    assert "secret" not in proc.stderr
    assert redact("postgresql://u:pw@h/db") == "postgresql://u:***@h/db"


def test_a_missing_bucket_fails_at_start_with_one_line(tmp_path, s3, pg_url):
    import os

    env = {**os.environ, "HAPVR_CATALOG": pg_url, "HAPVR_FEATURES": "s3://no-such-bucket/x",
           "HAPVR_S3_ENDPOINT": s3.endpoint, "HAPVR_CACHE_DIR": str(tmp_path / "cache")}
    proc = hapvr("index", str(clip(CAR)), "--data", str(tmp_path), env=env)
    assert proc.returncode == InputError.EXIT_CODES["backend_unavailable"], proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such bucket" in lines[0] and "s3://no-such-bucket/x" in lines[0], proc.stderr
    import psycopg

    with psycopg.connect(pg_url) as conn:  # nothing was created in the catalog
        assert conn.execute("SELECT to_regclass('videos')").fetchone()[0] is None


# ----- vector index (the coarse stage)
@pytest.fixture(params=["faiss", "milvus-lite"])
def vectors_factory(request, tmp_path):
    """Opens the vector index under test over an embedded store, as a process would on start."""
    from indexer.backends import open_vectors
    from indexer.store import Store

    store = Store(tmp_path / "data", MODEL)
    url = "" if request.param == "faiss" else str(tmp_path / "vectors.db")

    def make(dims=64):
        settings = make_settings(tmp_path / "data").model_copy(update={"vectors": url})
        settings_dims = settings.model_copy()
        return open_vectors(_with_dims(settings_dims, dims), store)
    return store, make


def _with_dims(settings, dims):
    """Settings whose encoder config reports `dims` (the contract runs on small synthetic descriptors)."""
    import dataclasses

    class Small(type(settings)):
        def encoder_config(self):
            return dataclasses.replace(super().encoder_config(), dims=dims)
    return Small(**settings.model_dump())


def put_video(store, rng, frames: int, dims: int = 64) -> tuple[int, np.ndarray]:
    feats = rng.standard_normal((frames, 9, dims)).astype(np.float16)
    video_id = store.write_features(feats)
    with store.write_lock():
        record = store.commit_video(video_id, source=f"{video_id}.mp4", external_id=None, sha256=video_id * 4,
                                    duration=frames, fps=1.0, width=64, height=64, codec="h264",
                                    timestamps=np.arange(frames, dtype=np.float32))
    return record.seq, feats


def test_vector_index_finds_deletes_and_persists(vectors_factory):
    from indexer.coarse import frame_descriptors

    store, make = vectors_factory
    rng = np.random.default_rng(1)
    index = make()
    assert index.size == 0 and isinstance(index.kind, str)
    empty = index.search(rng.standard_normal((2, 64)).astype(np.float32), 5)
    assert all(a.shape[0] == 2 for a in empty)
    videos = dict(put_video(store, rng, frames) for frames in (4, 6, 5))
    assert index.sync() == 3 and index.size == 15
    assert index.sync() == 0  # caught up: nothing twice
    seq = sorted(videos)[1]
    query = frame_descriptors(videos[seq])[[2, 4]]
    scores, seqs, frames = index.search(query, 3)
    assert seqs[:, 0].tolist() == [seq, seq] and frames[:, 0].tolist() == [2, 4]
    assert np.all(scores[:, 0] > 0.99) and np.all(np.diff(scores, axis=1) <= 1e-6)
    index.save()
    store.delete(store.by_seqs([seq])[seq].id)
    assert index.sync() == 1 and index.size == 9
    assert seq not in index.search(query, 9)[1]
    reopened = make()  # what it caught up to persists: it adds nothing again, and misses nothing new
    put_video(store, rng, 3)
    assert reopened.sync() == 1 and reopened.size == 12


def test_milvus_refuses_a_collection_of_another_dimension(tmp_path):
    from indexer.backends import open_vectors
    from indexer.store import Store

    store = Store(tmp_path / "data", MODEL)
    settings = make_settings(tmp_path / "data").model_copy(update={"vectors": str(tmp_path / "v.db")})
    open_vectors(_with_dims(settings, 64), store).sync()
    with pytest.raises(InputError) as err:
        open_vectors(_with_dims(settings, 32), store)
    assert err.value.code == "backend_unavailable"
    assert "64-dimensional" in err.value.message and "32" in err.value.message


def test_the_engine_on_milvus_lite_answers_like_the_embedded_default(embedded, tmp_path):
    engine = Engine(make_settings(tmp_path / "data").model_copy(update={"vectors": str(tmp_path / "vectors.db")}))
    assert all(o.created for _, o in engine.index_many([clip(n) for n in FILES]))
    assert engine.coarse.kind.startswith("milvus") and engine.coarse.size == embedded.coarse.size
    for name in (BIKES, BOTTLE_PREVIEW, CAR):
        want = embedded.query(clip(name), top_k=5)["results"]
        got = engine.query(clip(name), top_k=5)["results"]
        assert [Path(r["source"]).name for r in got] == [Path(r["source"]).name for r in want]
        assert all(abs(a["score"] - b["score"]) <= 1e-4 for a, b in zip(got, want) if a["score"] is not None)
