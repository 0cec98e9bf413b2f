"""int8 frame encoder for CPU: static post-training quantization of the exported ONNX graph.

EfficientNet-Lite was designed to survive int8 quantization (ReLU6, no squeeze-excite), and
onnxruntime's int8 convolutions use the CPU's integer dot products (VNNI), so the int8 graph costs
about half the CPU time of fp32 per frame (docs/BENCHMARKS.md, "Encoder input size and
precision"). That is the lever for indexing at the speed of decoding on a small CPU (issue #3).

Quantization is static (activation ranges measured once, on real frames) in onnxruntime's QDQ format,
weights per output channel. Two parts stay in float because they carry most of the error:
the first convolutions (full-resolution maps of a 3-channel input) and everything after the last
convolution (iMAC max-pooling, L2 normalisation and the PCA whitening, which scales up the
low-variance directions where quantization noise lives).

The activation ranges are an asset like the PCA: `hapvr calibrate-int8 FOLDER --out FILE` measures them
with onnxruntime's MinMax calibrator and writes its JSON cache; the ranges for the default encoder ship
in `model/assets`. The quantized graph is rebuilt from the fp32 export and the ranges on first use and
cached next to the export.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: leading convolutions kept in float (measured: 0 -> region cosine to fp32 0.949, 3 -> 0.976)
FLOAT_HEAD_CONVS = 3


@functools.cache
def cpu_has_int8_dot() -> bool:
    """True when the CPU has int8 dot-product instructions (x86 VNNI, Arm dotprod).

    Without them onnxruntime's x86 int8 kernels sum u8 x s8 pairs in saturating int16 (its docs advise
    7-bit weights there), so `auto` precision keeps fp32 on such CPUs. Linux only; elsewhere False.
    """
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return bool({"avx512_vnni", "avx_vnni", "asimddp"} & set(flags))


def float_nodes(model_path: Path, head_convs: int = FLOAT_HEAD_CONVS) -> list[str]:
    """Names of the nodes left unquantized: the first `head_convs` convolutions and all after the last one."""
    import onnx

    nodes = list(onnx.load(str(model_path)).graph.node)
    conv_at = [i for i, node in enumerate(nodes) if node.op_type == "Conv"]
    if not conv_at:
        raise ValueError(f"{model_path}: no convolution to quantize")
    head = [nodes[i].name for i in conv_at[:head_convs]]
    return head + [node.name for node in nodes[conv_at[-1] + 1 :]]


class _Frames:
    """onnxruntime CalibrationDataReader over batches of uint8 frames (duck-typed: its calibrators only call
    get_next, and subclassing would import onnxruntime wherever this module is imported)."""

    def __init__(self, batches: Iterable[np.ndarray]):
        self._it: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {"frames": np.ascontiguousarray(batch)}


def _quantize(fp32: Path, out: Path, ranges: Path, batches: Iterable[np.ndarray] | None) -> None:
    """Pre-process (shape inference, constant folding, fusions), then quantize with the ranges in `ranges`
    (measured on `batches` first when given). Without the pre-processing the int8 graph was both slower
    than fp32 and less faithful (region cosine 0.88 against 0.98), and the range names refer to it."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(prefix="hapvr-int8-") as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared), str(out), _Frames(batches) if batches is not None else None,
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=float_nodes(prepared),
            calibration_cache_path=str(ranges),
        )


def calibrate(fp32: Path, batches: Iterable[np.ndarray], ranges_out: Path) -> None:
    """Measure activation ranges of the fp32 graph on `batches` of fitted uint8 frames; write them as JSON.

    Batches must all have the same number of frames (the calibrator stacks them).
    """
    ranges_out = Path(ranges_out)
    # written under a fresh name and renamed at the end: a failed run keeps the old file, and onnxruntime
    # never reads a stale file back instead of calibrating
    fresh = ranges_out.with_name(f".{ranges_out.name}.{os.getpid()}.tmp")
    fresh.unlink(missing_ok=True)
    seen = 0

    def counted() -> Iterator[np.ndarray]:
        nonlocal seen
        for batch in batches:
            seen += len(batch)
            yield batch

    try:
        with tempfile.TemporaryDirectory(prefix="hapvr-int8-") as tmp:
            _quantize(Path(fp32), Path(tmp) / "int8.onnx", fresh, counted())
        # onnxruntime writes the tensors in set order; sorted, the same frames give the same bytes, so the
        # encoder version (which hashes this file) is reproducible
        fresh.write_text(json.dumps(json.loads(fresh.read_text()), sort_keys=True))
        fresh.chmod(0o644)  # onnxruntime writes it through mkstemp (0600); it is an asset to share
        fresh.replace(ranges_out)
    except ValueError:
        if seen == 0:
            raise ValueError("no decodable frames to measure int8 ranges on") from None
        raise
    finally:
        fresh.unlink(missing_ok=True)
    log.info("wrote int8 activation ranges to %s", ranges_out)


def quantized_model(fp32: Path, ranges: Path, out: Path) -> Path:
    """The int8 graph of `fp32` with the activation ranges in `ranges`, built once into `out` (atomic)."""
    if out.exists():
        return out
    if not Path(ranges).is_file():
        raise ValueError(f"int8 ranges file {ranges} not found; measure one with `hapvr calibrate-int8`")
    log.info("quantizing the frame encoder to int8 at %s (once)", out)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    try:
        _quantize(fp32, tmp, Path(ranges), None)
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
