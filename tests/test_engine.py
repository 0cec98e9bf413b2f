"""The engine end to end on real clips: index, query edited copies, segments, delete, idempotence, versions."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from bench import videoedit as ve
from indexer.engine import Engine
from indexer.errors import InputError
from config.settings import Settings
from model.checkpoint import load_similarity
from tests.clips import ASL, BIKES, BOTTLE, CAR, CLASSROOM, COLLECTION, clip, variant


def make_settings(data: Path, **kw) -> Settings:
    return Settings(data=data, cache_dir=Path(os.environ.get("HAPVR_CACHE_DIR", data.parent / "cache")), **kw)


def on_score_scale(engine: Engine, cosine: float) -> float:
    """A threshold given on the cosine scale of the training-free similarity, on the scale `engine`
    reports: a comparator's score is mapped from [-1, 1] to [0, 1] (docs/MODEL.md)."""
    return (cosine + 1) / 2 if engine.network.uses_comparator else cosine


def score_unit(engine: Engine) -> float:
    """How much one cosine unit of score difference is worth on `engine`'s scale."""
    return on_score_scale(engine, 1.0) - on_score_scale(engine, 0.0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    data = tmp_path_factory.mktemp("store")
    eng = Engine(make_settings(data))
    outcomes = list(eng.index_many([clip(name) for name in COLLECTION]))  # the `hapvr index` path
    assert [path.name for path, _ in outcomes] == COLLECTION
    assert all(outcome.created for _, outcome in outcomes)
    eng.save()
    return eng


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    out = tmp_path_factory.mktemp("copies")
    bikes = ve.read_clip(clip(BIKES), max_side=480)
    bottle = ve.read_clip(clip(BOTTLE), max_side=640)
    return {
        "reencoded": (ve.write_clip(ve.map_frames(bottle, lambda f: ve.resize(f, 0.5)), out / "re.mp4", crf=38),
                      BOTTLE),
        "cropped": (ve.write_clip(ve.map_frames(bikes, lambda f: ve.crop(f, 0.25)), out / "crop.mp4"), BIKES),
        "flipped": (ve.write_clip(ve.map_frames(bikes, ve.hflip), out / "flip.mp4"), BIKES),
        "text": (ve.write_clip(ve.map_frames(bottle, ve.text_overlay), out / "text.mp4"), BOTTLE),
        "excerpt": (ve.write_clip(ve.excerpt(bottle, 20, 30), out / "excerpt.mp4", crf=30), BOTTLE),
    }


@pytest.mark.parametrize("edit", ["reencoded", "cropped", "flipped", "text", "excerpt"])
def test_edited_copy_finds_its_source_first(engine, copies, edit):
    path, source = copies[edit]
    result = engine.query(path, top_k=5)
    top = result["results"][0]
    assert top["source"].endswith(source), result["results"][:3]
    # a clear margin over the best unrelated video: 0.2 in cosine units (the comparator's scale halves it)
    assert top["score"] > result["results"][1]["score"] + 0.2 * score_unit(engine)
    assert top["segments"], "a copy must come with a matching segment"
    assert set(result["timings_ms"]) >= {"decode", "embed", "coarse", "rerank", "total"}


def test_excerpt_reports_the_right_ten_seconds(engine, copies):
    path, _ = copies["excerpt"]
    seg = engine.query(path, top_k=1)["results"][0]["segments"][0]
    assert seg["target_start"] == pytest.approx(20.0, abs=1.0)
    assert seg["target_end"] == pytest.approx(30.0, abs=1.0)
    assert seg["query_start"] == pytest.approx(0.0, abs=1.0)
    assert seg["query_end"] == pytest.approx(10.0, abs=1.0)


def test_unrelated_results_carry_no_segment_and_say_why(engine, copies):
    path, source = copies["cropped"]
    results = engine.query(path, top_k=10)["results"]
    assert results[0]["source"].endswith(source) and results[0]["segments"]
    assert "segments_reason" not in results[0]
    assert all(not r["segments"] for r in results[1:])
    assert all(r["segments_reason"] in ("no_contrast", "no_aligned_run") for r in results[1:]), results[1:]


def test_a_mirrored_copy_is_found_in_the_flipped_orientation(engine, copies):
    path, source = copies["flipped"]
    top = engine.query(path, top_k=1)["results"][0]
    assert top["source"].endswith(source) and top["mirrored"] is True and top["segments"]
    assert engine.query(copies["reencoded"][0], top_k=1)["results"][0]["mirrored"] is False


def test_min_score_and_top_k(engine, copies):
    path, _ = copies["flipped"]
    assert len(engine.query(path, top_k=3)["results"]) == 3
    strict = engine.query(path, min_score=on_score_scale(engine, 0.3))["results"]
    assert len(strict) == 1 and strict[0]["source"].endswith(BIKES)


def test_query_by_indexed_id_excludes_itself(engine):
    record = engine.store.list(limit=1)[0]
    result = engine.query_by_id(record.id, top_k=3)
    assert record.id not in [r["id"] for r in result["results"]]
    with pytest.raises(InputError) as err:
        engine.query_by_id("nope")
    assert err.value.code == "not_found"


def test_reindex_is_idempotent_unless_forced(engine):
    path = clip(BIKES)
    before = engine.store.count()
    again = engine.index(path)
    assert not again.created and engine.store.count() == before
    old_id = again.record.id
    forced = engine.index(path, force=True)
    assert forced.created and forced.record.id != old_id
    assert engine.store.count() == before and engine.store.get(old_id) is None


def test_delete_removes_row_features_and_faiss_entries(tmp_path):
    eng = Engine(make_settings(tmp_path / "d"))
    a = eng.index(clip(BIKES)).record
    b = eng.index(clip(CLASSROOM)).record
    frames_before = eng.coarse.size
    assert eng.delete(a.id)
    assert eng.store.get(a.id) is None
    assert not eng.store.features.path(a.id).exists()
    assert eng.coarse.size == frames_before - a.frames
    assert not eng.delete(a.id)
    eng.save()
    # a fresh process sees the same state from disk
    fresh = Engine(make_settings(tmp_path / "d"))
    assert fresh.store.count() == 1 and fresh.coarse.size == b.frames
    assert [r["id"] for r in fresh.query(clip(BIKES))["results"]] == [b.id]


def test_refuses_to_mix_model_versions(tmp_path):
    eng = Engine(make_settings(tmp_path / "d"))
    eng.index(clip(ASL))
    other = Engine(make_settings(tmp_path / "d", resize_mode="crop"))
    with pytest.raises(InputError) as err:
        other.store
    assert err.value.code == "incompatible_store"


def test_int8_by_default_on_cpu_and_int8_and_fp32_features_share_a_collection(tmp_path, made):
    """The CPU default is the int8 encoder where the CPU has int8 dot products. int8 and fp32 features of one
    encoder config approximate one feature space, so a fleet of CPU (int8) and GPU (fp32) workers serves one
    collection: each row records the exact model that produced it, and either precision finds the other's
    videos; another frame size, PCA or checkpoint is still refused (test_refuses_to_mix_model_versions)."""
    from model.encoder_config import compatible_version
    from model.quantize import cpu_has_int8_dot

    default = Engine(make_settings(tmp_path / "default"))
    assert default.encoder.config.precision == ("int8" if cpu_has_int8_dot() else "fp32")
    int8 = Engine(make_settings(tmp_path / "d", encoder_precision="int8"))
    assert int8.encoder.config.precision == "int8" and "-int8:" in int8.model_version
    a = int8.index(clip(ASL)).record
    fp32 = Engine(make_settings(tmp_path / "d", encoder_precision="fp32"))
    assert fp32.encoder.config.precision == "fp32" and "-int8:" not in fp32.model_version
    assert compatible_version(fp32.model_version) == compatible_version(int8.model_version)
    b = fp32.index(clip(BIKES)).record
    assert a.model_version == int8.model_version and b.model_version == fp32.model_version
    for engine in (int8, fp32):
        for name, record in ((ASL, a), (BIKES, b)):
            top = engine.query(clip(name), top_k=1)["results"][0]
            assert top["id"] == record.id and top["segments"], (engine.model_version, top)
    # a re-encoded copy scores about the same against int8 features whether the query is embedded in fp32 or int8
    copy = variant(ASL, 3, made)
    across = fp32.query(copy, top_k=1)["results"][0]
    within = int8.query(copy, top_k=1)["results"][0]
    assert across["id"] == within["id"] == a.id and abs(across["score"] - within["score"]) < 0.02, (across, within)


def test_bad_file_leaves_the_index_intact(engine, tmp_path):
    count, frames = engine.store.count(), engine.coarse.size
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(InputError):
        engine.index(bad)
    assert engine.store.count() == count and engine.coarse.size == frames


def test_store_records_what_the_issue_lists(engine):
    record = engine.store.list(limit=1)[0]
    public = record.public()
    for key in ("id", "source", "sha256", "duration", "fps", "frames", "model_version", "metadata", "created"):
        assert key in public
    feats = engine.store.load_features(record.id)
    assert feats.dtype == np.float16 and feats.shape == (record.frames, 9, 512)
    info = engine.info()
    assert info["videos"] == engine.store.count() and info["frames"] == engine.coarse.size


def test_coarse_index_switches_to_ivf_and_survives_reopen(tmp_path):
    """With a tiny threshold the flat index converts to IVF-SQ8; search still finds the source."""
    settings = make_settings(tmp_path / "d", ivf_threshold=60)
    eng = Engine(settings)
    for name in (ASL, BIKES, BOTTLE, CLASSROOM):
        eng.index(clip(name))
    assert eng.coarse.is_ivf
    eng.save()
    fresh = Engine(settings)
    assert fresh.coarse.is_ivf and fresh.coarse.size == eng.coarse.size
    top = fresh.query(clip(BIKES), top_k=1)["results"][0]
    assert top["source"].endswith(BIKES)


def test_bfloat16_rerank_ranks_like_float32(engine, copies):
    """The CPU fast path (bf16 region dot products and comparator convolutions) keeps the ranking and
    moves scores by < 0.01."""
    import torch

    path, _ = copies["text"]
    emb = engine.embed(path)
    records = engine.store.list()
    targets = [torch.from_numpy(np.array(engine.store.load_features(r.id))) for r in records]
    net = engine.network
    assert net.uses_comparator  # the shipped checkpoint: both bf16 paths run
    saved = net.compute_dtype, net.comparator_dtype
    try:
        net.compute_dtype = net.comparator_dtype = torch.float32
        exact, _ = net.similarity(emb.features, targets)
        net.compute_dtype = net.comparator_dtype = torch.bfloat16
        fast, _ = net.similarity(emb.features, targets)
    finally:
        net.compute_dtype, net.comparator_dtype = saved
    assert torch.argmax(exact) == torch.argmax(fast)
    assert torch.allclose(exact, fast, atol=0.01)
    top = torch.topk(exact, 3).indices
    assert torch.equal(top, torch.topk(fast, 3).indices)


def test_shipped_trained_checkpoint_runs_end_to_end(tmp_path):
    """The checkpoint trained by `hapvr train` ships as the default: scores in [0, 1], source first; its
    Chamfer share and head come from the checkpoint unless HAPVR_CHAMFER_MIX / HAPVR_COMPARATOR say otherwise."""
    from indexer.engine import SHIPPED_CHECKPOINT

    ckpt = SHIPPED_CHECKPOINT
    eng = Engine(make_settings(tmp_path / "d"))
    assert eng.checkpoint_path == ckpt
    for name in (CAR, BIKES, ASL):
        eng.index(clip(name))
    assert eng.network.learned and "sim:" in eng.model_version and "chamfer" not in eng.model_version
    config = load_similarity(ckpt)[1]["config"]
    assert eng.info()["chamfer_mix"] == config["chamfer_mix"] > 0 and eng.network.comparator == config["comparator"]
    paper = Engine(make_settings(tmp_path / "d", checkpoint=ckpt, chamfer_mix=0.0))
    assert paper.network.chamfer_mix == 0.0 and paper.model_version == eng.model_version  # same stored features
    results = eng.query(clip(BIKES), top_k=3)["results"]
    assert results[0]["source"].endswith(BIKES) and results[0]["segments"]
    assert all(0.0 <= r["score"] <= 1.0 for r in results)
    # 0.5 is the comparator's decision boundary (Hardtanh output 0): the copy above it, unrelated clips below
    assert results[0]["score"] > 0.5 > results[1]["score"]
    # HAPVR_COMPARATOR=false: the same attended features, scored by the training-free Chamfer (not rescaled)
    attention = Engine(make_settings(tmp_path / "d", checkpoint=ckpt, comparator=False))
    assert attention.info()["similarity"] == "attention" and attention.model_version == eng.model_version
    ranked = attention.query(clip(BIKES), top_k=3)["results"]
    assert ranked[0]["source"].endswith(BIKES) and ranked[0]["segments"]
    assert ranked[0]["score"] > 2 * ranked[1]["score"]


def test_shipped_checkpoint_is_only_the_default_for_the_features_it_was_trained_on(tmp_path):
    """Another encoder (here a larger frame size) falls back to the training-free similarity instead of
    mis-scoring; the same checkpoint asked for by name fails with the reason."""
    from indexer.engine import SHIPPED_CHECKPOINT

    other = Engine(make_settings(tmp_path / "d", frame_size=224))
    assert other.checkpoint_path is None and not other.network.learned and other.model_version.endswith("+sim:chamfer")
    named = Engine(make_settings(tmp_path / "e", frame_size=224, checkpoint=SHIPPED_CHECKPOINT))
    with pytest.raises(InputError) as err:
        named.network
    assert err.value.code == "incompatible_store" and "squash176" in err.value.message


def test_index_many_reports_each_file_in_order_and_goes_on_after_bad_ones(tmp_path):
    """Look-ahead decoding must not mix up files: outcomes come back in order, one per file."""
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video at all")
    files = [clip(BOTTLE), bad, tmp_path / "missing.mp4", clip(BIKES),
             clip(BOTTLE)]
    eng = Engine(make_settings(tmp_path / "store"))
    outcomes = list(eng.index_many(files))
    assert [path for path, _ in outcomes] == files
    first, not_video, missing, bikes, again = (outcome for _, outcome in outcomes)
    assert first.created and bikes.created
    assert isinstance(not_video, InputError) and not_video.code == "not_a_video"
    assert isinstance(missing, InputError) and missing.code == "not_found"
    assert not again.created and again.record.id == first.record.id  # same sha256, decoded ahead, not re-added
    assert sorted(r.source for r in eng.store.list()) == sorted([str(files[0]), str(files[3])])
    assert eng.coarse.size == first.record.frames + bikes.record.frames
    # an edited copy still finds its own source: features were stored under the right rows
    assert eng.query(clip(BIKES), top_k=1)["results"][0]["id"] == bikes.record.id


def test_the_rerank_cascade_keeps_the_top_results_and_their_segments(engine, copies):
    """With the shipped checkpoint the comparator scores only the candidates of highest Chamfer share:
    the copy still comes first with the score and segments the full re-rank gives it, and no result
    that the cascade left out is reported."""
    assert engine.network.learned and engine.network.chamfer_mix  # the shipped default, which the cascade is for
    full = Engine(make_settings(engine.data, rerank_cascade=0))
    narrow = Engine(make_settings(engine.data, rerank_cascade=2))
    for edit in ("cropped", "text"):
        path, source = copies[edit]
        a, b = full.query(path, top_k=2), narrow.query(path, top_k=2)
        assert b["results"][0]["source"].endswith(source)
        assert b["results"][0]["id"] == a["results"][0]["id"]
        assert b["results"][0]["score"] == pytest.approx(a["results"][0]["score"], abs=1e-4)
        assert b["results"][0]["segments"] == a["results"][0]["segments"]
        assert len(b["results"]) == 2  # top_k wins over a smaller cascade
        assert narrow.query(path, top_k=5)["results"][4:]  # ... and so does a larger top_k


def test_coarse_candidates_keep_each_videos_better_orientation():
    """Both views go through the vector index in one call; each video keeps the view whose mean best
    neighbour score is higher, the excluded video never appears, and the limit cuts the ranking."""
    from indexer.search import coarse_candidates

    class Index:  # the VectorIndex contract's search: Tq x k scores and video seqs
        calls = 0

        def search(self, descriptors, k):
            Index.calls += 1
            assert len(descriptors) == 4 and k == 2  # 2 frames per view, one call
            scores = np.array([[0.9, 0.2], [0.7, 0.1], [0.3, 0.8], [0.4, 0.6]], dtype=np.float32)
            seqs = np.array([[1, 2], [1, 3], [1, 2], [3, 2]])
            return scores, seqs, np.zeros_like(seqs)

    views = [np.zeros((2, 4), np.float32), np.ones((2, 4), np.float32)]
    ranked = coarse_candidates(Index(), views, 2, exclude_seq=None, limit=10)
    assert Index.calls == 1
    # video 1: view 0 (0.9 + 0.7) / 2 = 0.8 beats view 1 0.15; video 2: view 1 (0.8 + 0.6) / 2 = 0.7
    assert [(seq, round(score, 3), view) for seq, score, view in ranked] == [(1, 0.8, 0), (2, 0.7, 1), (3, 0.2, 1)]
    assert [seq for seq, _, _ in coarse_candidates(Index(), views, 2, exclude_seq=1, limit=1)] == [2]
