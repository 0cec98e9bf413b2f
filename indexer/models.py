"""The models an engine scores with, and the policy that picks them: the frame encoder, the similarity
network (the shipped checkpoint when it fits the encoder's features, else the training-free Chamfer), the
re-rank precision, the model version the catalog records and the confidence calibration fitted for it.
Loaded on first use, once per process; the engine's stages (indexer/embedding.py, ingest.py, search.py)
are handed this object instead of building models themselves."""
from __future__ import annotations

import functools
import logging
import time
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from config.settings import Settings
from indexer import confidence as conf
from indexer.errors import InputError
from model.checkpoint import load_similarity
from model.encoder import FrameEncoder, encoder_version, feature_space
from model.pca import file_digest
from model.similarity import HAPVRSimilarity

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "model" / "assets" / "hapvr_sim.pt"


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU feature flags /proc/cpuinfo lists (empty where it cannot be read)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def bf16_matmul_is_faster() -> bool:
    """Whether bf16 region dot products beat float32 on this CPU.

    Decided by the CPU's flags where it lists bf16 units (`amx_bf16`, `avx512_bf16`), so that every
    process of a machine chooses alike: a timing probe run while other processes keep the same cores
    busy can find no gain, and processes that chose differently would score one pair differently
    (by < 0.01). Without those flags it is measured once per process (~0.1 s): on one AMD EPYC VM of
    our benchmarks /proc/cpuinfo listed no avx512_bf16, yet oneDNN's bf16 GEMM took 106 ms against
    281 ms in float32 for a 60-frame query's regions against 100 60-frame candidates. The probe has
    the query's side of that product and 4,096 target regions, and keeps each dtype's best of
    interleaved runs.
    """
    if cpu_flags() & {"amx_bf16", "avx512_bf16"}:
        return True
    q32, t32 = torch.randn(540, 512), torch.randn(512, 4096)
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    for dtype in (*best, *best):  # warm-up: oneDNN builds its kernels on the first calls
        q32.to(dtype) @ t32.to(dtype)
    for _ in range(5):
        for dtype in best:
            start = time.perf_counter()
            q32.to(dtype) @ t32.to(dtype)
            best[dtype] = min(best[dtype], time.perf_counter() - start)
    return best[torch.bfloat16] < 0.8 * best[torch.float32]


def bf16_conv_is_faster() -> bool:
    """Whether the comparator's convolutions run in bf16: on CPUs with AMX (`amx_bf16`), where they
    take 0.38 of their float32 time (27 S^F of 60 x 60 frames, 2-core Xeon); elsewhere float32, the
    paper's computation: bf16 convolutions have not been measured on other CPUs."""
    return "amx_bf16" in cpu_flags()


class Models:
    """One engine's models (thread-safe once loaded)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.device = torch.device(settings.torch_device())
        #: replaced by a FrameBatcher when several jobs embed concurrently (service workers)
        self.batcher = None

    def encode(self, frames: np.ndarray) -> torch.Tensor:
        """Frames -> region features, through the shared batcher when there is one."""
        return self.batcher.encode(frames) if self.batcher is not None else self.encoder.encode(frames)

    @cached_property
    def encoder(self) -> FrameEncoder:
        s = self.settings
        t0 = time.perf_counter()
        encoder = FrameEncoder(s.encoder_config(), device=self.device, cache_dir=s.cache_dir, batch_size=s.encode_batch)
        log.info("frame encoder (%s, %s) loaded in %.0f ms", encoder.runtime, self.device,
                 (time.perf_counter() - t0) * 1000)
        return encoder

    @cached_property
    def features_version(self) -> str:
        """This engine's encoder version (model.encoder.encoder_version), computed once: it hashes the PCA
        and int8 range files."""
        return encoder_version(self.settings.encoder_config())

    @cached_property
    def _checkpoint(self) -> tuple[Path, HAPVRSimilarity] | None:
        """The checkpoint the engine scores with and its network (read once, on the CPU), or None for the
        untrained similarity. The shipped network was trained on the default encoder's features; with
        another encoder (a frame size or backbone the user chose) it would mis-score, so the default falls
        back to the training-free similarity there, while a checkpoint asked for by name fails loudly."""
        if not self.settings.use_checkpoint:
            return None
        named = self.settings.checkpoint is not None
        path = Path(self.settings.checkpoint) if named else SHIPPED_CHECKPOINT
        if not path.is_file():
            if named:
                raise FileNotFoundError(f"checkpoint {path} not found")
            return None
        net, meta = load_similarity(path)
        expected = (meta or {}).get("encoder_version")
        if not self._fits_encoder(expected):
            if named:
                raise InputError("incompatible_store", f"checkpoint {path} was trained on {expected} features, "
                                 f"the encoder is {self.features_version}")
            log.warning("the shipped checkpoint expects %s features, the encoder is %s: using the untrained "
                        "Chamfer similarity", expected, self.features_version)
            return None
        return path, net

    @property
    def checkpoint_path(self) -> Path | None:
        return self._checkpoint[0] if self._checkpoint else None

    def _fits_encoder(self, checkpoint_encoder: str | None) -> bool:
        """Whether a checkpoint trained on `checkpoint_encoder` features (unknown for official files) can
        score this engine's features."""
        return not checkpoint_encoder or feature_space(checkpoint_encoder) == feature_space(self.features_version)

    @cached_property
    def network(self) -> HAPVRSimilarity:
        s = self.settings
        if self._checkpoint is None:
            net = HAPVRSimilarity(learned=False, f2f_topk_rate=s.f2f_topk_rate, v2v_topk_rate=s.v2v_topk_rate)
        else:
            net = self._checkpoint[1]
            if s.chamfer_mix is not None:
                net.chamfer_mix = s.chamfer_mix
            if s.comparator is not None:
                net.comparator = s.comparator
        net.compute_dtype, net.comparator_dtype = self._rerank_dtypes()
        log.info("re-rank precision: region products %s, comparator %s (HAPVR_RERANK_PRECISION=%s)",
                 net.compute_dtype, net.comparator_dtype, self.settings.rerank_precision)
        return net.to(self.device).eval()

    def _rerank_dtypes(self) -> tuple[torch.dtype, torch.dtype]:
        """The dtypes of the region products and of the comparator's convolutions on this device."""
        choice = self.settings.rerank_precision
        if choice == "auto":
            cpu = self.device.type == "cpu"
            return tuple(torch.bfloat16 if cpu and faster() else torch.float32
                         for faster in (bf16_matmul_is_faster, bf16_conv_is_faster))
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]
        return dtype, dtype

    @cached_property
    def model_version(self) -> str:
        """Encoder features + similarity network: what the stored features depend on."""
        return f"{self.features_version}+{self._similarity_version}"

    @property
    def _similarity_version(self) -> str:
        return f"sim:{file_digest(self.checkpoint_path)}" if self.checkpoint_path else "sim:chamfer"

    @cached_property
    def scoring_model(self) -> str:
        """The model version without the encoder's precision: int8 approximates the fp32 features, so one
        confidence calibration serves both (a new checkpoint, PCA, frame size or backbone changes it)."""
        return f"{feature_space(self.features_version)}+{self._similarity_version}"

    @cached_property
    def calibration(self) -> conf.Calibration | None:
        """The confidence map fitted for this engine's scoring model (indexer/confidence.py), or None."""
        return conf.load_for(self.scoring_model, self.settings.confidence_map)
