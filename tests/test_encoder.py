"""The frame encoder on real frames of the demo clips."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from bench.videoedit import read_clip
from tests.clips import BIKES, CAR, CLASSROOM, clip


def jpeg_roundtrip(frames: np.ndarray, quality: int = 25) -> np.ndarray:
    from PIL import Image

    out = []
    for f in frames:
        buf = io.BytesIO()
        Image.fromarray(f).save(buf, format="JPEG", quality=quality)
        out.append(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    return np.stack(out)


@pytest.fixture(scope="module")
def frames():
    a = read_clip(clip(BIKES), fps=1.0).frames[:4]
    b = read_clip(clip(CLASSROOM), fps=1.0).frames[:4]
    c = read_clip(clip(CAR), fps=1.0).frames[:4]
    return np.stack(a), np.stack(b), np.stack(c)


def test_output_shape_norm_and_determinism(encoder, frames):
    dog = frames[0]
    first = encoder.encode(dog)
    second = encoder.encode(dog)
    assert first.shape == (len(dog), 9, 512) and first.dtype == torch.float32
    assert torch.allclose(first.norm(dim=-1), torch.ones(len(dog), 9), atol=1e-5)
    assert torch.equal(first, second)


def test_reencoded_copy_scores_far_above_unrelated_frames(encoder, frames):
    dog, chaplin, cars = frames
    original = encoder.encode(dog)
    copy = encoder.encode(jpeg_roundtrip(dog))
    unrelated = torch.cat([encoder.encode(chaplin), encoder.encode(cars)])

    def frame_sim(a, b):  # Chamfer over regions, per frame pair
        return (a.flatten(0, 0) @ b.transpose(-1, -2)).amax(-1).mean(-1)

    same = torch.stack([frame_sim(original[i], copy[i]) for i in range(len(dog))])
    other = torch.stack([frame_sim(original[i], unrelated[j]) for i in range(len(dog)) for j in range(len(unrelated))])
    assert same.min() > 0.6
    assert other.max() < 0.35
    assert same.min() > other.max() + 0.3


def test_any_input_size_and_batching(encoder, frames):
    dog = frames[0]
    small = dog[:, ::3, ::3].copy()  # odd size, not 224
    out = encoder.encode(small)
    assert out.shape == (len(small), 9, 512)
    many = np.concatenate([dog] * 10)  # 40 frames: more than one batch of 32
    batched = encoder.encode(many)
    assert torch.allclose(batched[:4], batched[-4:], atol=1e-5)
    assert encoder.encode(np.zeros((0, 50, 60, 3), np.uint8)).shape == (0, 9, 512)


def test_rejects_non_rgb_input(encoder):
    with pytest.raises(ValueError):
        encoder.encode(np.zeros((2, 32, 32), np.uint8))
    with pytest.raises(ValueError):
        encoder.encode(np.zeros((2, 32, 32, 3), np.float32))


@pytest.mark.parametrize("size", [176, 224])
def test_torch_and_onnx_runtimes_agree(frames, tmp_path, size):
    """The default side (176, our pooling windows) and the paper's (224, the official kernels)."""
    from model.encoder import EncoderConfig, FrameEncoder, shipped_pca

    config = EncoderConfig(size=size, pca_path=shipped_pca(size))
    torch_enc = FrameEncoder(config, device="cpu", runtime="torch")
    onnx_enc = FrameEncoder(config, device="cpu", runtime="onnx", cache_dir=tmp_path)
    a, b = torch_enc.encode(frames[0][:2]), onnx_enc.encode(frames[0][:2])
    assert a.shape == (2, 9, 512)
    assert torch.allclose(a, b, atol=1e-3)
    assert torch_enc.version == onnx_enc.version
    assert f"squash{size}" in onnx_enc.version


def test_onnx_exports_of_two_sides_share_one_cache_without_clashing(frames, tmp_path):
    """The ONNX graph's spatial size is fixed at export: each side has its own cached file."""
    from model.encoder import EncoderConfig, FrameEncoder, shipped_pca

    small = FrameEncoder(EncoderConfig(size=176, pca_path=shipped_pca(176)), runtime="onnx", cache_dir=tmp_path)
    large = FrameEncoder(EncoderConfig(size=224, pca_path=shipped_pca(224)), runtime="onnx", cache_dir=tmp_path)
    assert small.encode(frames[1][:1]).shape == large.encode(frames[1][:1]).shape == (1, 9, 512)
    assert len(list(tmp_path.glob("frames-*.onnx"))) == 2


def test_pool_windows_give_a_covering_3x3_grid():
    import torch.nn.functional as F

    from model.imac import STAGE_KERNELS, pool_window

    for side, kernel in STAGE_KERNELS.items():  # the official kernels at 224
        assert pool_window(side) == (kernel, -(-kernel // 2))
    for side in (3, 5, 6, 10, 11, 22, 44, 48, 80):
        kernel, stride = pool_window(side)
        assert 2 * stride + kernel == side  # three windows, first and last touch the borders
        assert F.max_pool2d(torch.zeros(1, 1, side, side), kernel, stride).shape[-1] == 3
    with pytest.raises(ValueError, match="too small"):
        pool_window(2)


def test_default_side_per_backbone_and_its_shipped_pca(monkeypatch):
    from config.settings import Settings
    from model.encoder import DEFAULT_SIZE, EncoderConfig, shipped_pca

    assert EncoderConfig().size == DEFAULT_SIZE["efficientnet-lite0"] == 176
    assert EncoderConfig(backbone="resnet50").size == 224  # the paper's
    assert Settings().encoder_config().pca_path == shipped_pca(176)
    assert shipped_pca(176).is_file() and shipped_pca(224).is_file()
    monkeypatch.setenv("HAPVR_FRAME_SIZE", "224")
    config = Settings().encoder_config()
    assert (config.size, config.pca_path) == (224, shipped_pca(224))


def test_paper_resnet50_backbone_from_user_files(tmp_path, frames):
    """The paper's ResNet-50 L3-iMAC path, with random weights standing in for the user's files."""
    from model.backbones.resnet import CHANNELS, ResNet50Stages
    from model.encoder import EncoderConfig, FrameEncoder

    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pth"
    state = ResNet50Stages().state_dict()
    state["fc.weight"], state["fc.bias"] = torch.zeros(1000, 2048), torch.zeros(1000)  # torchvision layout
    torch.save(state, weights)
    g = np.random.default_rng(0)
    v, _ = np.linalg.qr(g.standard_normal((CHANNELS, CHANNELS)))
    pca = tmp_path / "pca_resnet50.pth"  # ViSiL format: full eigen-decomposition
    torch.save({"mean": torch.zeros(CHANNELS), "d": torch.linspace(0.1, 2.0, CHANNELS),
                "V": torch.from_numpy(v.astype(np.float32))}, pca)
    config = EncoderConfig(backbone="resnet50", pca_path=pca, weights_path=weights, resize_mode="crop")
    enc = FrameEncoder(config, device="cpu", runtime="torch")
    out = enc.encode(frames[0][:2])
    assert CHANNELS == 3840
    assert out.shape == (2, 9, 512)
    assert torch.allclose(out.norm(dim=-1), torch.ones(2, 9), atol=1e-5)
    assert enc.version.startswith("resnet50-")
    with pytest.raises(ValueError, match="HAPVR_RESNET50_WEIGHTS"):
        FrameEncoder(EncoderConfig(backbone="resnet50", pca_path=pca), device="cpu")


@pytest.fixture(scope="module")
def int8_encoders(tmp_path_factory):
    """The shipped int8 encoder and its fp32 original, sharing one export cache."""
    from model.encoder import EncoderConfig, FrameEncoder

    cache = tmp_path_factory.mktemp("onnx")
    return (FrameEncoder(EncoderConfig(), runtime="onnx", cache_dir=cache),
            FrameEncoder(EncoderConfig(precision="int8"), runtime="onnx", cache_dir=cache))


def test_int8_encoder_stays_close_to_fp32_and_keeps_copies_apart(int8_encoders, frames):
    fp32, int8 = int8_encoders
    dog, chaplin, _ = frames
    a, b = fp32.encode(dog), int8.encode(dog)
    assert b.shape == a.shape and torch.allclose(b.norm(dim=-1), torch.ones(len(dog), 9), atol=1e-5)
    cosine = (a * b).sum(-1)
    assert cosine.mean() > 0.95 and cosine.min() > 0.85
    assert not torch.allclose(a, b, atol=1e-3)  # it really is the quantized graph
    # under int8, a JPEG copy of a frame still scores far above any unrelated frame (Chamfer over regions)
    copy, other = int8.encode(jpeg_roundtrip(dog)), int8.encode(chaplin)
    same = torch.stack([(b[i] @ copy[i].T).amax(-1).mean() for i in range(len(dog))])
    unrelated = torch.stack([(b[i] @ other[j].T).amax(-1).mean() for i in range(len(dog)) for j in range(len(other))])
    assert same.min() > 0.6 and same.min() > unrelated.max() + 0.3
    assert int8.version != fp32.version and int8.version.startswith(fp32.version) and "-int8:" in int8.version


def test_int8_ranges_from_the_cli_quantize_end_to_end(tmp_path, frames, monkeypatch):
    """`hapvr calibrate-int8` on real clips writes ranges that an int8 encoder then runs on."""
    from indexer.cli import main
    from model.encoder import EncoderConfig, FrameEncoder

    monkeypatch.setenv("HAPVR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "ranges.json"
    assert main(["calibrate-int8", str(clip(BIKES)), str(clip(CLASSROOM)),
                 "--out", str(out), "--quiet", "--batch", "8"]) == 0
    assert out.is_file() and "lowest" in out.read_text()
    again = tmp_path / "again.json"  # reproducible to the byte: the encoder version hashes this file
    assert main(["calibrate-int8", str(clip(BIKES)), str(clip(CLASSROOM)),
                 "--out", str(again), "--quiet", "--batch", "8"]) == 0
    assert again.read_bytes() == out.read_bytes()
    enc = FrameEncoder(EncoderConfig(precision="int8", int8_ranges=out), runtime="onnx", cache_dir=tmp_path / "cache")
    assert enc.encode(frames[0][:2]).shape == (2, 9, 512)
    assert len(list((tmp_path / "cache").glob("frames-*-int8-*.onnx"))) == 1
    (tmp_path / "empty").mkdir()
    assert main(["calibrate-int8", str(tmp_path / "empty"), "--out", str(tmp_path / "none.json"), "--quiet"]) == 2
    assert not (tmp_path / "none.json").exists()


def test_learn_pca_from_the_cli_whitens_real_regions_and_feeds_an_encoder(tmp_path, frames, monkeypatch):
    """`hapvr learn-pca` on real clips writes an orthonormal, variance-ordered PCA that whitens the region
    vectors it was learnt from, and an encoder built on it gives unit vectors of its dims, with a version
    of its own; no frames: exit 2 and no file."""
    from indexer.cli import main
    from model.encoder import EncoderConfig, FrameEncoder
    from model.learn_pca import collect_regions
    from model.pca import load_pca_params

    monkeypatch.setenv("HAPVR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "pca.npz"
    assert main(["learn-pca", str(clip(BIKES)), str(clip(CLASSROOM)), "--out", str(out),
                 "--dims", "32", "--fps", "1", "--quiet"]) == 0
    params = load_pca_params(out)
    v, d = params["V"].astype(np.float64), params["d"]
    assert v.shape[1] == 32 and np.all(np.diff(d) <= 0) and d[-1] > 0
    assert np.allclose(v.T @ v, np.eye(32), atol=1e-4)
    raw = FrameEncoder(EncoderConfig(), runtime="onnx", cache_dir=tmp_path / "cache", with_pca=False)
    assert v.shape[0] == raw.channels
    regions = collect_regions(raw, [np.stack(frames[0]), np.stack(frames[1])])  # frames it was learnt from
    whitened = (regions - params["mean"]) @ v / np.sqrt(d)
    spread = whitened.var(axis=0)
    assert 0.3 < spread[:8].min() and spread[:8].max() < 3.0  # the top components: about unit variance
    enc = FrameEncoder(EncoderConfig(pca_path=out, dims=32), runtime="onnx", cache_dir=tmp_path / "cache")
    feats = enc.encode(frames[0][:2])
    assert feats.shape == (2, 9, 32) and torch.allclose(feats.float().norm(dim=-1), torch.ones(2, 9), atol=1e-3)
    assert enc.version != FrameEncoder(EncoderConfig(), runtime="onnx", cache_dir=tmp_path / "cache").version
    (tmp_path / "empty").mkdir()
    assert main(["learn-pca", str(tmp_path / "empty"), "--out", str(tmp_path / "none.npz"), "--quiet"]) == 2
    assert not (tmp_path / "none.npz").exists()


def test_int8_is_refused_where_it_cannot_run(tmp_path):
    from model.encoder import EncoderConfig, FrameEncoder

    with pytest.raises(ValueError, match="onnxruntime on CPU only"):
        FrameEncoder(EncoderConfig(precision="int8"), runtime="torch")
    with pytest.raises(ValueError, match="calibrate-int8"):
        FrameEncoder(EncoderConfig(precision="int8", int8_ranges=tmp_path / "missing.json"), runtime="onnx",
                     cache_dir=tmp_path)
    with pytest.raises(ValueError, match="precision"):
        EncoderConfig(precision="int4")
    from config.settings import Settings

    with pytest.raises(ValueError, match="auto, fp32 or int8"):
        Settings(encoder_precision="int4").encoder_config()
