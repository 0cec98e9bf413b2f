"""Training on real clips: the loss goes down, resume is exact, augmentations are deterministic."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from model.augment import pixel_video_in_video, pixel_view, temporal_indices
from model.checkpoint import load_similarity, save_similarity
from indexer.decode import training_frames
from model.train import FeatureCache, TrainConfig, build_cache, make_batch, make_loss, train
from model.teacher import backbone_teacher
from tests.clips import ASL, BIKES, BOTTLE, CAR, CLASSROOM, PEOPLE, clip

CLIPS = [BOTTLE, CAR, BIKES, ASL, CLASSROOM, PEOPLE]


@pytest.fixture(scope="module")
def small(tmp_path_factory, encoder):
    config = TrainConfig(window=8, batch=4, steps=16, lr=1e-3, warmup=2, strong_views=2, save_every=4, seed=3)
    folder = tmp_path_factory.mktemp("cache")
    files = build_cache([clip(n) for n in CLIPS], encoder, folder, config, read=training_frames)
    return config, FeatureCache(files, config.viv_views), folder


def fixed_batch_loss(net, cache, config) -> float:
    clips, labels, _ = make_batch(cache, config, step=10_000)  # a batch never trained on
    with torch.no_grad():
        f2f, sim, psi = net(clips)
        total, _ = make_loss(config)(f2f, sim, psi, labels, backbone_teacher(clips))
    return float(total)


def test_a_few_steps_reduce_the_loss(small, tmp_path):
    config, cache, _ = small
    torch.manual_seed(config.seed)
    from model.similarity import HAPVRSimilarity

    before = fixed_batch_loss(HAPVRSimilarity(), cache, config)  # the same init train() starts from
    net = train(cache, config, tmp_path / "state.pt", tmp_path / "log.jsonl", progress=False)
    after = fixed_batch_loss(net, cache, config)
    assert after < before - 0.05, (before, after)
    log = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert len(log) == config.steps and {"nce", "sshn", "reg", "video_ap", "frame_ap"} <= set(log[0])


def test_resume_continues_exactly(small, tmp_path):
    config, cache, _ = small
    straight = train(cache, config, tmp_path / "a.pt", tmp_path / "a.jsonl", progress=False)
    state = tmp_path / "b.pt"
    _train_until(cache, config, state, tmp_path / "b.jsonl", stop_after=8)  # killed after step 8
    resumed = train(cache, config, state, tmp_path / "b.jsonl", resume=True, progress=False)
    for (name, a), (_, b) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.allclose(a, b, atol=1e-6), name


def _train_until(cache, config, state, log, stop_after: int) -> None:
    """Run the real loop but stop it after `stop_after` steps, as a kill would (state saved every 4)."""
    import model.train as mt

    original = mt.make_batch
    calls = {"n": 0}

    def limited(cache_, config_, step):
        if calls["n"] >= stop_after:
            raise KeyboardInterrupt
        calls["n"] += 1
        return original(cache_, config_, step)

    mt.make_batch = limited
    try:
        with pytest.raises(KeyboardInterrupt):
            train(cache, config, state, log, progress=False)
    finally:
        mt.make_batch = original
    assert torch.load(state, weights_only=False)["step"] == stop_after


def test_checkpoint_is_small_and_round_trips(small, tmp_path):
    config, cache, _ = small
    net = train(cache, TrainConfig(**{**config.__dict__, "steps": 2}), tmp_path / "s.pt", tmp_path / "l.jsonl",
                progress=False)
    path = tmp_path / "sim.pt"
    save_similarity(net, path, encoder_version="v", trained={"steps": 2})
    loaded, meta = load_similarity(path)
    assert path.stat().st_size < 5 * 1024 * 1024 and meta["encoder_version"] == "v"
    x = torch.nn.functional.normalize(torch.randn(2, 8, 9, 512), dim=-1)
    assert torch.allclose(net(x)[1], loaded(x)[1])


def test_attention_lr_and_pooled_ap_are_honoured(small, tmp_path):
    """--attention-lr 0 trains the comparator alone (attention stays at its seeded init); --pooled-ap adds
    its term to the logged loss."""
    from model.similarity import HAPVRSimilarity

    config, cache, _ = small
    cfg = TrainConfig(**{**config.__dict__, "steps": 3, "attention_lr": 0.0, "pooled_ap": 4.0})
    torch.manual_seed(cfg.seed)
    init = HAPVRSimilarity().state_dict()
    net = train(cache, cfg, tmp_path / "s.pt", tmp_path / "l.jsonl", progress=False)
    for name, value in net.state_dict().items():
        moved = not torch.equal(value, init[name])
        assert moved == name.startswith("comparator_module."), name
    first = json.loads((tmp_path / "l.jsonl").read_text().splitlines()[0])
    assert 0.0 <= first["pooled_ap"] <= 1.0


def test_graded_term_uses_the_training_free_scores_of_the_batch(small, tmp_path):
    """--graded adds its term, computed against the untrained Chamfer of the same unattended clips."""
    from model.losses import graded_negatives
    from model.similarity import HAPVRSimilarity

    config, cache, _ = small
    cfg = TrainConfig(**{**config.__dict__, "steps": 2, "graded": 2.0})
    clips, labels, _ = make_batch(cache, cfg, step=0)
    torch.manual_seed(cfg.seed)
    net = HAPVRSimilarity()
    reference = net.chamfer_all_pairs(clips)
    plain = HAPVRSimilarity(learned=False)
    for i in range(2):  # the reference is exactly what the training-free similarity scores at inference
        scores, _ = plain.similarity(clips[i], [clips[j] for j in range(len(clips))])
        assert torch.allclose(reference[i], scores, atol=1e-5)
    with torch.no_grad():
        expected = float(graded_negatives(net(clips)[1], reference, labels))
    train(cache, cfg, tmp_path / "s.pt", tmp_path / "l.jsonl", progress=False)
    first = json.loads((tmp_path / "l.jsonl").read_text().splitlines()[0])
    assert first["graded"] == pytest.approx(expected, abs=1e-4)


def test_augmentations_and_batches_are_deterministic(small):
    config, cache, _ = small
    frames = np.random.default_rng(0).integers(0, 255, (3, 120, 160, 3), dtype=np.uint8)
    a = pixel_view(frames, np.random.default_rng(7), strong=True)
    b = pixel_view(frames, np.random.default_rng(7), strong=True)
    c = pixel_view(frames, np.random.default_rng(8), strong=True)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(temporal_indices(56, 28, np.random.default_rng(1)),
                          temporal_indices(56, 28, np.random.default_rng(1)))
    x1, y1, t1 = make_batch(cache, config, 5)
    x2, y2, _ = make_batch(cache, config, 5)
    assert t1 is None  # the backbone teacher is computed from the clips
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (2 * config.batch, config.window, 9, 512)
    # weak i and strong i are positives; the diagonal too
    b = config.batch
    assert all(y1[i, b + i] == 1 and y1[i, i] == 1 for i in range(b))


def test_dino_teacher_from_user_weights(tmp_path, encoder):
    """The paper's teacher path: DINO ViT-S/16 weights from a file (random ones here) feed the pseudo-labels."""
    from model.teacher import DinoViTS16

    torch.manual_seed(0)
    weights = tmp_path / "dino_deitsmall16_pretrain.pth"
    # the layout of a DINO training checkpoint's "teacher" entry: DDP prefix, backbone, and a head we ignore
    state = {f"module.backbone.{k}": v for k, v in DinoViTS16().state_dict().items()}
    torch.save({"teacher": state | {"module.head.last_layer.weight": torch.zeros(4, 4)}}, weights)
    config = TrainConfig(window=8, batch=2, steps=2, strong_views=1, teacher="dino", dino_weights=str(weights),
                         warmup=1)
    files = build_cache([clip(ASL), clip(CLASSROOM)], encoder, tmp_path / "c", config, read=training_frames)
    cache = FeatureCache(files, config.viv_views)
    clips, labels, teacher = make_batch(cache, config, 0)
    assert teacher.shape == (4, 8, 384)
    assert torch.allclose(teacher.norm(dim=-1), torch.ones(4, 8), atol=1e-2)
    train(cache, config, tmp_path / "s.pt", tmp_path / "l.jsonl", progress=False)
    assert "frame_ap" in json.loads((tmp_path / "l.jsonl").read_text().splitlines()[-1])
    with pytest.raises(ValueError, match="dino-weights"):
        build_cache([clip(ASL)], encoder, tmp_path / "d",
                    TrainConfig(teacher="dino", strong_views=1), read=training_frames)


def test_pixel_video_in_video_pastes_the_inset_clip_and_nothing_else():
    rng = np.random.default_rng(0)
    host = rng.integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    inset = np.full((3, 64, 64, 3), 200, np.uint8)
    out = pixel_video_in_video(host, inset, np.random.default_rng(1))
    again = pixel_video_in_video(host, inset, np.random.default_rng(1))
    assert np.array_equal(out, again)  # deterministic under a seed
    changed = (out != host).any(axis=-1)  # T x H x W
    assert changed.any()
    area = np.unique(changed.sum(axis=(1, 2)))
    assert len(area) == 1 and 0.3 * 64 * 64 * 0.8 <= area[0] <= 0.7 * 64 * 64 * 1.2  # one box, 1 - lambda
    assert (out[changed] == 200).all()  # the box holds the inset's pixels (frame t uses inset frame t mod 3)
    small_box = (pixel_video_in_video(host, inset, np.random.default_rng(1), area=(0.1, 0.12)) != host).any(-1)
    assert 0.1 * 64 * 64 * 0.8 <= small_box[0].sum() <= 0.12 * 64 * 64 * 1.2  # a configurable inset area


def test_pixel_viv_batches_link_each_host_to_the_video_inside_it(small):
    """With pixel ViV, a strong clip that shows another video is labelled positive to that video's clips."""
    config, cache, _ = small
    assert all(len(views) == config.viv_views for views in cache.viv)
    cfg = TrainConfig(**{**config.__dict__, "viv_p": 1.0})
    b = min(cfg.batch, len(cache.videos))
    linked = 0
    for step in range(30):
        sources = np.random.default_rng([cfg.seed, 1, step]).choice(len(cache.videos), size=b, replace=False)
        _, labels, _ = make_batch(cache, cfg, step)
        for j in range(b):
            for i in range(b):
                if i != j and labels[b + j, i] == 1:  # strong clip j positive to source i's weak clip
                    insets = {inset for _, _, inset in cache.viv[int(sources[j])]}
                    assert int(sources[i]) in insets  # strong clip j shows video i
                    linked += 1
    assert linked > 0
