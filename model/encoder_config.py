"""What defines the encoder's features (backbone, input side, PCA, precision) and where its shipped assets
are, free of torch: the settings object and the `hapvr` parser read it without loading a model."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
#: input side per backbone when none is given. The paper runs at 224; Lite0 runs at 176 by default, which
#: costs about two thirds of the encoder CPU of 224 with the same copy-benchmark accuracy (docs/MODEL.md, "Input size").
DEFAULT_SIZE = {"efficientnet-lite0": 176, "resnet50": 224}


def shipped_pca(size: int) -> Path:
    """The PCA file we ship for Lite0 at this input side (learnt with `hapvr learn-pca`; may not exist)."""
    return ASSETS / ("pca_efficientnet_lite0.npz" if size == 224 else f"pca_efficientnet_lite0_{size}.npz")


def shipped_int8_ranges(size: int) -> Path:
    """The int8 activation ranges we ship for Lite0 at this input side (`hapvr calibrate-int8`; may not exist)."""
    return ASSETS / f"int8_ranges_efficientnet_lite0_{size}.json"


DEFAULT_PCA = shipped_pca(DEFAULT_SIZE["efficientnet-lite0"])
BACKBONES = ("efficientnet-lite0", "resnet50")
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class EncoderConfig:
    """Everything that changes the features; two stores with different configs must not mix."""

    backbone: str = "efficientnet-lite0"
    pca_path: Path = DEFAULT_PCA
    weights_path: Path | None = None  # resnet50 only: torchvision state dict
    size: int | None = None  # None: the backbone's DEFAULT_SIZE
    resize_mode: str = "squash"
    dims: int = 512
    precision: str = "fp32"  # int8: the quantized graph (`model.quantize`), onnxruntime on CPU only
    int8_ranges: Path | None = None  # int8 only; None: the shipped ranges for the side

    def __post_init__(self) -> None:
        if self.size is None:
            object.__setattr__(self, "size", DEFAULT_SIZE.get(self.backbone, 224))
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown encoder precision {self.precision!r}; use one of {PRECISIONS}")
        if self.precision == "int8" and self.int8_ranges is None:
            object.__setattr__(self, "int8_ranges", shipped_int8_ranges(self.size))


def feature_space(version: str) -> str:
    """An encoder version without its precision: int8 approximates the fp32 features of the same config
    (mean cosine 0.976 between their region vectors, docs/MODEL.md "Precision"), so a similarity network
    trained on one serves both, and one collection holds both."""
    return version.split("-int8:")[0]


def compatible_version(model_version: str) -> str:
    """What must match for features to share a collection: a model version (encoder + similarity network)
    with the encoder's precision left out. Backbone, frame size, resize mode, PCA and checkpoint must be
    the same; int8 and fp32 features of them may mix (a fleet of CPU and GPU workers)."""
    encoder, plus, similarity = model_version.partition("+")
    return feature_space(encoder) + plus + similarity
