"""Encoder input size and precision (fp32, int8): CPU cost, indexing throughput and copy-benchmark accuracy.

The default Lite0 input side (176, `model.encoder.DEFAULT_SIZE`) was chosen from this table: encoder
CPU falls with the square of the side, so a smaller input is the lever for indexing throughput on a
small CPU (issue #3), as long as the copy benchmark does not lose accuracy. For each side the PCA is the
shipped one when we ship it, otherwise learnt here exactly as `hapvr learn-pca` does (same clips, same
frames). Accuracy is the untrained Chamfer similarity on the copy benchmark (`bench.copies`), every query
against the whole database; "worst family" is the family whose mAP changed most against 224.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.copies import split
from bench.copies.floor import embed_queries, load_database, score_all
from bench.copies.run import build_queries, worst_family
from bench.engine_speed import decode_only, timed
from bench.metrics import summary
from bench.report import publish, table
from bench.samples import SHARED, h264_set
from indexer.decode import iter_frames, probe
from indexer.engine import Engine
from config.settings import Settings
from model.encoder import DEFAULT_SIZE, shipped_pca
from model.similarity import HAPVRSimilarity


def pca_for(size: int, work: Path) -> Path:
    """The shipped PCA at this side, or one learnt now by the same command that made the shipped ones."""
    if shipped_pca(size).is_file():
        return shipped_pca(size)
    out = work / f"pca{size}.npz"
    env = dict(os.environ, HAPVR_FRAME_SIZE=str(size))
    subprocess.run([sys.executable, "-m", "indexer.cli", "learn-pca", str(SHARED), "--out", str(out), "--quiet"],
                   env=env, check=True)
    return out


def encoder_cpu_ms(engine: Engine, frames: np.ndarray) -> float:
    """Process CPU time per frame of the encoder (both cores), batches of the engine's size."""
    batch = engine.settings.encode_batch
    engine.encoder.encode(frames[:batch])  # warm-up (and the one-off ONNX export)
    t0 = os.times()
    for i in range(0, len(frames), batch):
        engine.encoder.encode(frames[i : i + batch])
    t1 = os.times()
    return ((t1.user - t0.user) + (t1.system - t0.system)) * 1000 / len(frames)


def indexing_ratio(engine: Engine, work: Path) -> tuple[float, float]:
    """(indexing video-s per wall-s, indexing / decode-only) on the 360p H.264 set, decode-only right before."""
    files = h264_set(360)
    seconds = sum(probe(f).duration for f in files)
    decode_s = timed(lambda: decode_only(engine, files))
    fresh = Engine(engine.settings.model_copy(update={"data": work}), models=engine.models)
    index_s = timed(lambda: list(fresh.index_many(files)))
    return seconds / index_s, decode_s / index_s


def accuracy(engine: Engine, queries: list[dict]) -> dict[str, dict[str, float]]:
    return score_all(HAPVRSimilarity(learned=False), queries, load_database(engine), embed_queries(engine, queries))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 176, 160], help="fp32 encoders")
    parser.add_argument("--int8", type=int, nargs="*", default=[176], help="int8 encoders (sides with int8 ranges)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(2)
    queries = build_queries()
    relevant = {q["path"]: set(q["relevant"]) for q in queries}
    work = Path(tempfile.mkdtemp(prefix="hapvr-size-"))
    variants = [(size, "fp32") for size in args.sizes] + [(size, "int8") for size in args.int8]
    engines: dict[tuple[int, str], Engine] = {}
    frames: dict[tuple[int, str], np.ndarray] = {}
    cpu_ms: dict[tuple[int, str], float] = {}
    rounds: dict[tuple[int, str], list[tuple[float, float]]] = {}
    results = {}
    try:
        for key in variants:
            size, precision = key
            engines[key] = Engine(Settings(data=work / f"db{size}{precision}", frame_size=size,
                                           pca_path=pca_for(size, work), encoder_precision=precision,
                                           use_checkpoint=False))
            frames[key] = np.concatenate([b.frames for b in iter_frames(
                SHARED / "intel__bottle-detection.mp4", fps=4.0, size_for=engines[key].encoder.decode_size)])[:128]
        # speed first, the variants interleaved round by round: this VM's speed drifts within minutes
        for round_ in range(3):
            for key, engine in engines.items():
                cpu_ms[key] = min(cpu_ms.get(key, float("inf")), encoder_cpu_ms(engine, frames[key]))
                rounds.setdefault(key, []).append(indexing_ratio(engine, work / f"speed{key[0]}{key[1]}-{round_}"))
        speed = {key: sorted(r, key=lambda x: x[1])[len(r) // 2] for key, r in rounds.items()}  # median round
        for key, engine in engines.items():
            t0 = time.perf_counter()
            scores = accuracy(engine, queries)
            results[key] = (cpu_ms[key], *speed[key], scores)
            print(f"{key}: {cpu_ms[key]:.1f} ms/frame, indexing {speed[key][0]:.0f} video-s/s "
                  f"({speed[key][1]:.2f} of decode), {summary(scores, relevant, split.all_clips())} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base_key = (224, "fp32")
    base = results.get(base_key, next(iter(results.values())))
    default_side = DEFAULT_SIZE["efficientnet-lite0"]
    default = (default_side, Settings().precision(default_side))  # what the CPU default resolves to here
    pip = [q["path"] for q in queries if q["family"] == "pip"]
    rows = []
    for (size, precision), (cpu_ms, index_vs, ratio, scores) in results.items():
        overall = summary(scores, relevant, split.all_clips())
        pip_map = summary({p: scores[p] for p in pip}, relevant, split.all_clips())["mAP"]
        delta, family = worst_family(queries, scores, base[3])
        label = f"{size} {precision}" + (" (default on CPU)" if (size, precision) == default else "")
        rows.append([label, round(cpu_ms, 1), round(cpu_ms / base[0], 2), round(index_vs, 1), round(ratio, 2),
                     round(overall["mAP"], 4), round(overall["uAP"], 4), round(overall["R@1"], 3), round(pip_map, 3),
                     "-" if (size, precision) == base_key else f"{delta:+.3f} ({family})"])
    body = table(["encoder", "encoder CPU ms/frame", "vs 224 fp32", "360p indexing video-s/s", "indexing / decode",
                  "mAP", "μAP", "R@1", "pip mAP", "worst family vs 224 fp32"], rows)
    body += ("\n\nEfficientNet-Lite0, onnxruntime on both cores, batches of 32 real frames; indexing on the 360p "
             "H.264 set of `bench.engine_speed` (6 files, 79 s), each indexing run right after a decode-only run of the "
             "same files. Three rounds, the variants interleaved within each; encoder CPU is the lowest of the three, "
             "indexing the round with the median ratio. Accuracy: untrained Chamfer similarity, 145 copy-benchmark "
             "queries against 57 clips. This VM's speed drifts by 10-20% within minutes, so single timings are "
             "noisy; the encoder's CPU per frame is the steadier measure.")
    publish("frame_size", "Encoder input size and precision", "python -m bench.frame_size", body,
            print_only=args.no_write)


if __name__ == "__main__":
    main()
