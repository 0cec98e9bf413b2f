"""TopK-Chamfer, masks, the similarity network's entry points and official-checkpoint compatibility."""
from __future__ import annotations

import pytest
import torch

from model.checkpoint import load_similarity, save_similarity
from model.similarity import HAPVRSimilarity, RegionMax, max_pool2, topk_chamfer


def test_topk_chamfer_k1_is_chamfer_and_k_all_is_mean():
    g = torch.Generator().manual_seed(0)
    s = torch.randn(3, 5, 11, generator=g)
    assert torch.allclose(topk_chamfer(s, rate=0.01), s.amax(-1).mean(-1))
    assert torch.allclose(topk_chamfer(s, rate=1.0), s.mean((-1, -2)))
    k = 3  # rate 0.3 of 11 columns rounds to 3
    expected = s.topk(k, -1).values.mean(-1).mean(-1)
    assert torch.allclose(topk_chamfer(s, rate=0.3), expected)


def test_topk_chamfer_masks_ignore_padding():
    g = torch.Generator().manual_seed(1)
    real = torch.randn(4, 6, generator=g)
    padded = torch.full((7, 10), 99.0)
    padded[:4, :6] = real
    rows = torch.tensor([1, 1, 1, 1, 0, 0, 0])
    cols = torch.tensor([1] * 6 + [0] * 4)
    for rate in (0.01, 0.5, 1.0):
        got = topk_chamfer(padded, rate, row_mask=rows, col_mask=cols)
        assert torch.allclose(got, topk_chamfer(real, rate)), rate


def random_video(t: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(t, 9, 512, generator=g), dim=-1)


@pytest.mark.parametrize("learned", [False, True])
def test_similarity_handles_every_length(learned):
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=learned).eval()
    query = net.index_video(random_video(5, 0))
    targets = [net.index_video(random_video(t, t)) for t in (1, 2, 3, 9, 40)]
    scores, f2f = net.similarity(query, targets)
    assert scores.shape == (5,)
    assert torch.isfinite(scores).all()
    assert [m.shape for m in f2f] == [(5, t) for t in (1, 2, 3, 9, 40)]
    one_frame, _ = net.similarity(net.index_video(random_video(1, 7)), targets[:2])
    assert torch.isfinite(one_frame).all()


def test_batched_scores_equal_one_by_one():
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=True).eval()
    query = net.index_video(random_video(12, 0))
    targets = [net.index_video(random_video(t, 10 + t)) for t in (8, 13, 30)]
    together, _ = net.similarity(query, targets)
    alone = torch.stack([net.similarity(query, [t])[0][0] for t in targets])
    assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_inference_max_pool_gives_max_pool2d_values(dtype):
    g = torch.Generator().manual_seed(3)
    for shape in ((2, 3, 8, 10), (1, 4, 7, 9), (3, 1, 3, 5)):
        x = torch.randn(*shape, generator=g).to(dtype)
        with torch.no_grad():
            assert torch.equal(max_pool2(x), torch.nn.functional.max_pool2d(x, 2, 2)), shape


def test_inference_comparator_scores_like_the_training_computation():
    """The inference path (strided-maxima pools, no mask for a batch of one length) gives the scores of
    the computation training differentiates, for equal and for mixed lengths."""
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=True).eval()
    for lengths in ((20, 20, 20), (9, 20, 31)):
        f2f = torch.randn(len(lengths), 15, max(lengths))
        mask = torch.zeros(len(lengths), max(lengths))
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        with torch.no_grad():
            fast = net.video_score(f2f * mask[:, None, :], None if len(set(lengths)) == 1 else mask)
        trained = net.video_score(f2f * mask[:, None, :], mask).detach()
        assert torch.allclose(fast, trained, atol=1e-6), lengths


def test_long_targets_are_chunked_and_averaged():
    net = HAPVRSimilarity(learned=False, target_chunk=16).eval()
    query = random_video(6, 0)
    target = random_video(40, 1)
    score, f2f = net.similarity(query, [target])
    parts = [net.similarity(query, [target[s : s + 16]])[0][0] for s in (0, 16, 32)]
    assert float(score[0]) == pytest.approx(float(sum(parts) / 3), abs=1e-6)
    assert f2f[0].shape == (6, 40)


def test_copy_scores_above_unrelated():
    net = HAPVRSimilarity(learned=False)
    video = random_video(20, 3)
    noisy = torch.nn.functional.normalize(video + 0.01 * torch.randn_like(video), dim=-1)
    scores, _ = net.similarity(noisy[5:15], [video, random_video(20, 4)])
    assert scores[0] > 0.8 > 0.2 > scores[1]


def test_training_forward_shapes_and_masks():
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=True)
    x = torch.nn.functional.normalize(torch.randn(3, 8, 9, 512), dim=-1)
    f2f, sim, psi = net(x)
    assert f2f.shape == (3, 3, 8, 8) and sim.shape == (3, 3) and psi.shape == (9, 1, 2, 2)
    assert ((sim >= 0) & (sim <= 1)).all()
    # a padded batch: the third video has 5 real frames; its similarities ignore the padding
    mask = torch.ones(3, 8)
    mask[2, 5:] = 0
    x2 = x.clone()
    x2[2, 5:] = 123.0
    f2f_masked, _, _ = net(x2, mask)
    assert torch.all(f2f_masked[2, :, 5:, :] == 0) and torch.all(f2f_masked[:, 2, :, 5:] == 0)
    assert sum(p.numel() for p in net.parameters()) == 355_969


@pytest.mark.parametrize("chunk", [28, 4, 1])
def test_region_max_gives_the_values_and_gradient_of_the_full_region_product(chunk):
    """The training batch's S^F: RegionMax against autograd through the full product and amax, in
    float64 so that no two regions tie; 35 frames leave a partial last chunk at every chunk size."""
    n, t, r, d = 5, 7, 9, 16
    g = torch.Generator().manual_seed(3)
    x = torch.randn(n * t * r, d, generator=g, dtype=torch.float64)
    weights = torch.randn(n * t * r, n * t, generator=g, dtype=torch.float64)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    reference = (a @ a.T).view(n * t * r, n * t, r).amax(-1)
    best = RegionMax.apply(b, n * t, r, chunk)
    (reference * weights).sum().backward()
    (best * weights).sum().backward()
    assert torch.allclose(best, reference, rtol=0, atol=1e-12)
    assert torch.allclose(b.grad, a.grad, rtol=0, atol=1e-10)
    first = b.grad.clone()
    b.grad = None
    (RegionMax.apply(b, n * t, r, chunk) * weights).sum().backward()
    assert torch.equal(b.grad, first)  # deterministic


def test_training_f2f_is_the_spatial_chamfer_of_every_ordered_pair():
    """The fast path of the training forward (max over target regions) against frame_to_frame, which
    scores one query against targets at inference."""
    torch.manual_seed(1)
    net = HAPVRSimilarity(learned=False)
    x = torch.nn.functional.normalize(torch.randn(4, 6, 9, 64), dim=-1)
    f2f = net._all_pairs_f2f(x)
    with torch.no_grad():
        for i in range(4):
            assert torch.allclose(f2f[i], net.frame_to_frame(x[i], x), atol=1e-6)


def official_state_dict(prefix: str = "", comparator: str = "comparator_module") -> dict[str, torch.Tensor]:
    shapes = {
        "attention.transform.weight": (512, 512), "attention.transform.bias": (512,),
        "attention.context_vector.weight": (1, 512),
        f"{comparator}.conv1.weight": (32, 1, 3, 3), f"{comparator}.conv1.bias": (32,),
        f"{comparator}.conv2.weight": (64, 32, 3, 3), f"{comparator}.conv2.bias": (64,),
        f"{comparator}.conv3.weight": (128, 64, 3, 3), f"{comparator}.conv3.bias": (128,),
        f"{comparator}.fconv.weight": (1, 128, 1, 1), f"{comparator}.fconv.bias": (1,),
    }
    g = torch.Generator().manual_seed(5)
    return {prefix + k: torch.randn(v, generator=g) * 0.05 for k, v in shapes.items()}


@pytest.mark.parametrize("wrap", ["plain", "model_key_ddp", "s2vs"])
def test_loads_official_checkpoint_layouts(tmp_path, wrap):
    state = official_state_dict()
    if wrap == "plain":
        payload = state
    elif wrap == "model_key_ddp":
        payload = {"model": official_state_dict("module."), "epoch": 3, "args": {"lr": 4e-5}}
    else:
        payload = {"model": official_state_dict(comparator="visil_head")}
    path = tmp_path / "ckpt.pth"
    torch.save(payload, path)
    net, _ = load_similarity(path)
    assert net.learned
    assert torch.equal(net.attention.transform.weight, state["attention.transform.weight"])
    assert torch.equal(net.comparator_module.fconv.weight, state["comparator_module.fconv.weight"])
    # every parameter of ours has exactly the official name and shape
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_rejects_a_foreign_checkpoint(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"model": {"fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ValueError, match="not a HAP-VR"):
        load_similarity(path)


def test_own_checkpoint_round_trips(tmp_path):
    net = HAPVRSimilarity(learned=True, v2v_topk_rate=0.2)
    path = tmp_path / "sim.pt"
    save_similarity(net, path, encoder_version="enc-v1")
    loaded, meta = load_similarity(path)
    assert meta["encoder_version"] == "enc-v1"
    assert loaded.v2v_topk_rate == 0.2
    for (k, a), (_, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k
    assert path.stat().st_size < 5 * 1024 * 1024


def test_chamfer_mix_is_the_weighted_sum_of_learned_and_untrained_chamfer(tmp_path):
    """The mixed score is exactly (1 - m) * learned + m * Chamfer of the *unattended* features, whose
    directions the stored (attended) features keep; it round-trips through a checkpoint."""
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=True).eval()
    raw_query, raw_targets = random_video(12, 0), [random_video(t, 20 + t) for t in (3, 9, 30)]
    query, targets = net.index_video(raw_query), [net.index_video(t) for t in raw_targets]
    learned, _ = net.similarity(query, targets)
    chamfer, _ = HAPVRSimilarity(learned=False).similarity(raw_query, raw_targets)
    net.chamfer_mix = 0.3
    mixed, _ = net.similarity(query, targets)
    assert torch.allclose(mixed, 0.7 * learned + 0.3 * chamfer, atol=1e-5)
    assert not torch.allclose(mixed, learned, atol=1e-3)
    path = tmp_path / "mixed.pt"
    save_similarity(net, path, encoder_version="enc-v1")
    loaded, meta = load_similarity(path)
    assert loaded.chamfer_mix == 0.3 and meta["config"]["chamfer_mix"] == 0.3
    assert load_similarity(path, chamfer_mix=0.0)[0].chamfer_mix == 0.0
    with pytest.raises(ValueError, match="chamfer_mix"):
        HAPVRSimilarity(chamfer_mix=1.5)


def test_attention_head_scores_attended_features_with_training_free_chamfer(tmp_path):
    """comparator=False keeps the trained attention and replaces the comparator by the untrained
    network's TopK-Chamfer: exactly the untrained score of the attended features. Its Chamfer share
    mixes the same way, and the choice round-trips through a checkpoint."""
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=True, comparator=False).eval()
    assert net.mode == "attention" and not net.uses_comparator
    raw_query, raw_targets = random_video(12, 0), [random_video(t, 40 + t) for t in (3, 9, 30)]
    query, targets = net.index_video(raw_query), [net.index_video(t) for t in raw_targets]
    attended, _ = net.similarity(query, targets)
    untrained = HAPVRSimilarity(learned=False)
    assert torch.allclose(attended, untrained.similarity(query, targets)[0], atol=1e-6)
    assert not torch.allclose(attended, untrained.similarity(raw_query, raw_targets)[0], atol=1e-3)
    net.comparator = True
    assert not torch.allclose(net.similarity(query, targets)[0], attended, atol=1e-3)
    net.comparator, net.chamfer_mix = False, 0.4
    mixed, _ = net.similarity(query, targets)
    chamfer, _ = untrained.similarity(raw_query, raw_targets)
    assert torch.allclose(mixed, 0.6 * attended + 0.4 * chamfer, atol=1e-5)
    path = tmp_path / "attention.pt"
    save_similarity(net, path, encoder_version="enc-v1")
    loaded = load_similarity(path)[0]
    assert loaded.comparator is False and loaded.mode == "attention" and loaded.chamfer_mix == 0.4
    assert load_similarity(path, comparator=True)[0].mode == "learned"


def test_the_cascade_scores_its_kept_targets_exactly_and_returns_the_plain_matrices():
    """cascade_similarity with every target kept gives similarity()'s scores; with `keep` it scores the
    targets of highest Chamfer share exactly as similarity() does and leaves the others at -inf; its
    matrices are the plain cosine S^F that segments are found on."""
    torch.manual_seed(0)
    net = HAPVRSimilarity(learned=True, chamfer_mix=0.5).eval()
    raw_query = random_video(12, 0)
    raw_targets = [random_video(t, 20 + t) for t in (3, 9, 30, 14, 7)]
    raw_targets[3] = raw_query[2:12] + 0.05 * random_video(10, 99)  # one copy: the highest Chamfer share
    query, targets = net.index_video(raw_query).detach(), [net.index_video(t).detach() for t in raw_targets]
    before = [t.clone() for t in targets]
    full, _ = net.similarity(query, targets)
    assert all(torch.equal(a, b) for a, b in zip(before, targets))  # the caller's features stay as they were
    every, plain = net.cascade_similarity(query, targets, keep=None)
    assert torch.allclose(every, full, atol=1e-5)
    chamfer, _ = HAPVRSimilarity(learned=False).similarity(raw_query, raw_targets)
    kept_scores, _ = net.cascade_similarity(query, targets, keep=2)
    kept = torch.isfinite(kept_scores)
    assert kept.sum() == 2 and set(torch.nonzero(kept).flatten().tolist()) == set(torch.topk(chamfer, 2).indices.tolist())
    assert torch.allclose(kept_scores[kept], full[kept], atol=1e-5)
    unit = torch.nn.functional.normalize
    for target, sim in zip(targets, plain):
        expected = net.frame_to_frame(unit(query, dim=-1), unit(target, dim=-1).unsqueeze(0))[0]
        assert torch.allclose(sim.float(), expected.float(), atol=1e-2)
    with pytest.raises(ValueError, match="Chamfer share"):
        HAPVRSimilarity(learned=False).cascade_similarity(raw_query, raw_targets, keep=2)
