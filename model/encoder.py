"""Frame encoder: uint8 RGB frames (N x H x W x 3) -> region features N x 9 x 512.

The graph is backbone stages -> iMAC (`model.imac`) -> PCA whitening
(`model.pca`). On CPU the backbone+iMAC part runs in onnxruntime, exported
once from the same torch weights and cached, because torch's depthwise
convolutions are ~5x slower at batch > 1 on CPU (measured in
`bench/encoder_speed.py`). On CUDA it runs in torch, fp16, channels-last.
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model import preprocess
from model.imac import imac
from model.encoder_config import feature_space  # noqa: F401 - re-exported
from model.encoder_config import (ASSETS, BACKBONES, DEFAULT_PCA, DEFAULT_SIZE, PRECISIONS,  # noqa: F401
                                  EncoderConfig, shipped_int8_ranges, shipped_pca)
from model.pca import PCAWhitening, file_digest

log = logging.getLogger(__name__)

class ImacNet(nn.Module):
    """uint8 NHWC frames -> N x 9 x C unit-norm iMAC descriptors (pre-PCA)."""

    def __init__(self, stages: nn.Module, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.stages = stages.eval()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1))

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.permute(0, 3, 1, 2).to(self.mean.dtype)
        x = (x - self.mean) / self.std
        return imac(self.stages(x))


def build_imac_net(config: EncoderConfig) -> nn.Module:
    if config.backbone == "efficientnet-lite0":
        from model.backbones import efficientnet_lite as eff

        return ImacNet(eff.EfficientNetLiteStages(), eff.MEAN, eff.STD)
    if config.backbone == "resnet50":
        from model.backbones import resnet

        if config.weights_path is None:
            raise ValueError(
                "the resnet50 backbone needs torchvision ResNet-50 weights: set HAPVR_RESNET50_WEIGHTS "
                "(nothing is downloaded)"
            )
        return ImacNet(resnet.ResNet50Stages.from_torchvision_weights(config.weights_path), resnet.MEAN, resnet.STD)
    raise ValueError(f"unknown backbone {config.backbone!r}; use one of {BACKBONES}")


def _state_digest(net: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:12]


class OnnxImac:
    """Runs an exported frame network in onnxruntime; the export is cached by weights digest."""

    def __init__(self, net: nn.Module, cache_dir: Path, size: int = 224, threads: int | None = None,
                 int8_ranges: Path | None = None):
        import onnxruntime as ort

        # the graph's spatial size is fixed at export, so it is part of the cache key
        suffix = "" if size == 224 else f"-{size}"
        path = cache_dir / f"frames-{_state_digest(net)}{suffix}.onnx"
        if not path.exists():
            self._export(net, path, size)
        self.fp32_path = path
        if int8_ranges is not None:
            from model.quantize import quantized_model

            path = quantized_model(path, int8_ranges, path.with_name(
                f"{path.stem}-int8-{file_digest(int8_ranges)[:12]}.onnx"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or max(1, len(os.sched_getaffinity(0)))
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @staticmethod
    def _export(net: nn.Module, path: Path, size: int) -> None:
        """Export to a temp name and rename, so concurrent workers never read half a file."""
        import warnings

        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("exporting the frame encoder to ONNX at %s (once)", path)
        buf = io.BytesIO()
        dummy = torch.zeros(2, size, size, 3, dtype=torch.uint8)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net, (dummy,), buf, input_names=["frames"], output_names=["out"],
                dynamic_axes={"frames": {0: "n"}, "out": {0: "n"}}, opset_version=17, dynamo=False,
            )
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(path)

    def __call__(self, frames: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"frames": frames})[0])


class FrameEncoder:
    """Frames -> region features. Thread-safe; load once per process and reuse."""

    def __init__(self, config: EncoderConfig, device: str | torch.device = "cpu",
                 runtime: str = "auto", cache_dir: Path | None = None, batch_size: int = 32,
                 with_pca: bool = True):
        if config.resize_mode not in preprocess.RESIZE_MODES:
            raise ValueError(f"unknown resize mode {config.resize_mode!r}")
        self.config = config
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.channels = _imac_channels(config.backbone)
        self.pca: PCAWhitening | None = None
        if with_pca:  # without: only `raw_regions`, to learn a PCA
            if not Path(config.pca_path).is_file():
                raise ValueError(f"PCA file {config.pca_path} not found; learn one with `hapvr learn-pca`")
            self.pca = PCAWhitening.from_file(config.pca_path, dims=config.dims).to(self.device)
            if self.pca.in_dims != self.channels:
                raise ValueError(f"PCA file {config.pca_path} is {self.pca.in_dims}-d, backbone gives "
                                 f"{self.channels}-d")
        if runtime == "auto":
            runtime = "onnx" if self.device.type == "cpu" and _has_onnxruntime() else "torch"
        if runtime not in ("onnx", "torch"):
            raise ValueError(f"unknown runtime {runtime!r}; use auto, onnx or torch")
        if config.precision == "int8":
            if runtime != "onnx":
                raise ValueError("the int8 encoder runs in onnxruntime on CPU only; set HAPVR_ENCODER_PRECISION=fp32 "
                                 "for the GPU (its features differ, so a store keeps one precision)")
            int8_ranges_file(config)
        self.runtime = runtime
        self._cache_dir = cache_dir or default_cache_dir()
        self._lock = threading.Lock()
        self._imac = build_imac_net(config)
        # The whole graph (backbone, iMAC, PCA) runs in one engine: mixing torch
        # and onnxruntime thread pools on 2 cores costs ~15% in spin-waiting.
        self._encode = self._compile(nn.Sequential(self._imac, self.pca) if self.pca is not None else None,
                                     int8=config.precision == "int8")
        self._raw = None
        self.version = encoder_version(config) if self.pca is not None else f"{config.backbone}-imac-raw"

    def _compile(self, net: nn.Module | None, int8: bool = False):
        if net is None:
            return None
        if self.runtime == "onnx":
            return OnnxImac(net, self._cache_dir, self.config.size,
                            int8_ranges=int8_ranges_file(self.config) if int8 else None)
        net = net.to(self.device).eval()
        if self.device.type == "cuda":
            net = net.half().to(memory_format=torch.channels_last)

        @torch.inference_mode()
        def run(frames: np.ndarray) -> torch.Tensor:
            return net(torch.from_numpy(frames).to(self.device)).float()

        return run

    @property
    def fp32_onnx_path(self) -> Path:
        """The cached fp32 ONNX export of the whole graph (onnx runtime only): what int8 ranges are measured on."""
        if not isinstance(self._encode, OnnxImac):
            raise RuntimeError("no ONNX export: this encoder runs in torch or has no PCA")
        return self._encode.fp32_path

    def decode_size(self, width: int, height: int) -> tuple[int, int]:
        """The frame size a decoder should scale to, so `encode` only has to crop."""
        return preprocess.resize_target(width, height, self.config.size, self.config.resize_mode)

    def _batched(self, run, frames: np.ndarray, dims: int) -> torch.Tensor:
        frames = preprocess.fit_frames(frames, self.config.size, self.config.resize_mode)
        with self._lock:
            out = [run(np.ascontiguousarray(frames[i : i + self.batch_size]))
                   for i in range(0, len(frames), self.batch_size)]
        return torch.cat(out) if out else torch.zeros(0, 9, dims, device=self.device)

    def raw_regions(self, frames: np.ndarray) -> torch.Tensor:
        """Pre-PCA iMAC descriptors (N x 9 x C), used to learn the PCA."""
        if self._raw is None:
            self._raw = self._compile(self._imac)
        return self._batched(self._raw, frames, self.channels)

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 N x H x W x 3 RGB -> float32 N x 9 x 512, unit norm, on `self.device`."""
        if self._encode is None:
            raise RuntimeError("this encoder was built without PCA (with_pca=False)")
        return self._batched(self._encode, frames, self.config.dims)

    __call__ = encode


def encoder_version(config: EncoderConfig) -> str:
    """Identifies the features an encoder produces, without building it (cheap: hashes the PCA file)."""
    version = (f"{config.backbone}-imac-pca{config.dims}:{file_digest(config.pca_path)}"
               f"-{config.resize_mode}{config.size}")
    if config.precision == "int8":
        version += f"-int8:{file_digest(int8_ranges_file(config))}"
    return version


def int8_ranges_file(config: EncoderConfig) -> Path:
    """The int8 config's ranges file, which must exist: the version hashes it and the int8 graph is built from it."""
    path = Path(config.int8_ranges)
    if not path.is_file():
        raise ValueError(f"int8 ranges file {path} not found; measure one with `hapvr calibrate-int8` "
                         "or set HAPVR_ENCODER_PRECISION=fp32")
    return path


def _imac_channels(backbone: str) -> int:
    if backbone == "resnet50":
        from model.backbones.resnet import CHANNELS
    else:
        from model.backbones.efficientnet_lite import CHANNELS
    return CHANNELS


def _has_onnxruntime() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_dir() -> Path:
    return Path(os.environ.get("HAPVR_CACHE_DIR", Path.home() / ".cache" / "hapvr"))


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def build_encoder(config: EncoderConfig | None = None, device: str | None = None, **kwargs) -> FrameEncoder:
    """The encoder with defaults: Lite0, shipped PCA, GPU when present."""
    return FrameEncoder(config or EncoderConfig(), device=device or default_device(), **kwargs)
