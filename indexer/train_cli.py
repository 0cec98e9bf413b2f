"""`hapvr train`: the command line of the self-supervised training (`model/train.py` does the work).

Its arguments come from `model.train_config.TrainConfig`, which imports no torch, so that building the
`hapvr` parser (every command, `--help` included) stays fast; torch loads when `train` runs.
"""
from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

from model.train_config import TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("videos", nargs="+", help="video files or folders (unlabeled)")
    parser.add_argument("--out", required=True, help="checkpoint to write (weights + config, no optimizer)")
    parser.add_argument("--work", default="hapvr-train", help="cache, resumable state and training log")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    for name, value in asdict(TrainConfig()).items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)


def run(args: argparse.Namespace) -> int:
    from indexer.cli import expand_paths
    from config.settings import Settings
    from model.checkpoint import save_similarity
    from model.encoder import FrameEncoder
    from model.similarity import HEADS
    from indexer.decode import training_frames
    from indexer.errors import InputError
    from model.train import FeatureCache, build_cache, train

    config = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig()) if hasattr(args, k)})
    if config.head not in HEADS or not 0.0 <= config.chamfer_mix <= 1.0:
        print(f"hapvr train: --head must be one of {', '.join(HEADS)} and --chamfer-mix lie in [0, 1] "
              f"(got {config.head!r}, {config.chamfer_mix})", flush=True)
        return 2
    settings = Settings()
    device = settings.torch_device()
    # Trained on the fp32 features (the paper's precision): the checkpoint then serves the fp32 and the
    # int8 encoder alike, which approximate one feature space (`model.encoder.feature_space`).
    encoder = FrameEncoder(dataclasses.replace(settings.encoder_config(), precision="fp32", int8_ranges=None),
                           device=device, cache_dir=settings.cache_dir)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    videos = list(expand_paths(args.videos))
    cache_dir = work / (f"cache-{encoder.version.replace(':', '_')}-seed{config.seed}-k{config.strong_views}"
                        f"-{config.teacher}")
    files = build_cache(videos, encoder, cache_dir, config, read=training_frames, unreadable=(InputError,))
    if len(files) < 2:
        print("hapvr train: need at least two decodable videos", flush=True)
        return 2
    start = time.perf_counter()
    stem = Path(args.out).stem  # several runs (an ablation) can share one work folder and its cache
    net = train(FeatureCache(files, config.viv_views, config.viv_area), config, work / f"state-{stem}.pt",
                work / f"log-{stem}.jsonl",
                resume=args.resume, progress=not args.quiet, device=device)
    net.comparator, net.chamfer_mix = config.head == "comparator", config.chamfer_mix
    save_similarity(net.cpu(), Path(args.out), encoder_version=encoder.version,
                    trained={"config": asdict(config), "videos": len(files), "seconds": round(time.perf_counter() - start)})
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 1e6:.2f} MB) after {config.steps} steps")
    return 0
