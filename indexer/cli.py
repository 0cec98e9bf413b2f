"""`hapvr`: index, query, list, delete, info, learn-pca, calibrate-int8, on the embedded engine (no server needed)."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from indexer.decode import VIDEO_EXTENSIONS
from indexer.errors import InputError

log = logging.getLogger("hapvr")


def expand_paths(paths: list[str]) -> Iterator[Path]:
    """Files as given; folders recursively, keeping files with a video extension, sorted."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS)
        else:
            yield path


def _settings(args: argparse.Namespace):
    from config.settings import Settings

    return Settings(**({"data": Path(args.data)} if args.data else {}))


def _existing_data(args: argparse.Namespace) -> Path:
    """The data directory a reading command names; a folder that holds no index is refused (a typo must not
    look like an empty collection, nor leave an empty folder behind)."""
    from indexer.store import Store

    settings = _settings(args)
    data = settings.data
    if not settings.catalog and not Store.exists(data):  # a cluster catalog is checked when it opens
        raise InputError("no_store", f"{data}: no index here (create one with `hapvr index VIDEOS --data {data}`)")
    return data


def _engine(args: argparse.Namespace, existing: bool = True):
    """The engine on the command's data directory; `existing`: the directory must already hold an index."""
    from indexer.engine import Engine

    settings = _settings(args)
    if existing:
        _existing_data(args)
    return Engine(settings)


def cmd_index(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    files = list(expand_paths(args.paths))
    if not files:
        print("hapvr index: no video files found", file=sys.stderr)
        return 2
    metadata = json.loads(args.metadata) if args.metadata else None
    if metadata is not None and not isinstance(metadata, dict):
        raise ValueError("--metadata must be a JSON object")
    engine = _engine(args, existing=False)
    engine.store.remove_orphans()  # feature files of jobs killed mid-write, if any
    counts = {"indexed": 0, "already indexed": 0, "failed": 0}
    failures: list[tuple[Path, InputError | Exception]] = []
    start = time.perf_counter()
    try:
        bar = tqdm(total=len(files), unit="video",
                   disable=args.quiet or not sys.stderr.isatty() and not args.progress)
        for path, outcome in engine.index_many(files, metadata=metadata, force=args.force):
            bar.set_postfix_str(path.name[-40:])
            bar.update()
            if isinstance(outcome, Exception):  # unexpected ones were logged with their traceback
                counts["failed"] += 1
                failures.append((path, outcome))
            else:
                counts["indexed" if outcome.created else "already indexed"] += 1
        bar.close()
    finally:
        engine.save()
    for path, exc in failures:
        code = exc.code if isinstance(exc, InputError) else "error"
        msg = exc.message if isinstance(exc, InputError) else f"{path}: {exc}"
        print(f"FAILED [{code}] {msg}", file=sys.stderr)
    elapsed = time.perf_counter() - start
    print(f"indexed {counts['indexed']}, already indexed {counts['already indexed']}, "
          f"failed {counts['failed']} of {len(files)} files in {elapsed:.1f} s")
    if not failures:
        return 0
    codes = {exc.exit_code if isinstance(exc, InputError) else 1 for _, exc in failures}
    return codes.pop() if len(codes) == 1 else 1


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text}: a confidence is in 0..1")
    return value


def _format_table(result: dict) -> str:
    lines = [f"query: {result['query']}", "  rank  confidence  score  id                source"]
    if not result["results"]:
        lines.append(f"  no match ({result['note']})" if result.get("note") else "  no match")
    for rank, r in enumerate(result["results"], 1):
        confidence = "exact" if r.get("exact_duplicate") else (
            "   -" if r.get("confidence") is None else f"{int(r['confidence'] * 1000) / 1000:.3f}")  # 0.9999: 0.999
        score = "  -  " if r["score"] is None else f"{r['score']:.3f}"
        lines.append(f"  {rank:>4}. {confidence:>9}  {score}  {r['id']}  {r['source']}"
                     + ("  (mirrored)" if r.get("mirrored") else ""))
        if not r["segments"] and r.get("segments_reason"):
            lines.append(f"        no segment ({r['segments_reason']})")
        for s in r["segments"][:3]:
            lines.append(f"        query {s['query_start']:7.1f}-{s['query_end']:<7.1f}s  ->  target "
                         f"{s['target_start']:7.1f}-{s['target_end']:<7.1f}s  (score {s['score']:.3f})")
    t = result["timings_ms"]
    lines.append("  timings ms: " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    return "\n".join(lines)


def cmd_query(args: argparse.Namespace) -> int:
    engine = _engine(args)
    status = 0
    for video in args.videos:
        try:
            if args.id:
                result = engine.query_by_id(video, top_k=args.top_k, min_score=args.min_score,
                                            min_confidence=args.min_confidence)
            else:
                result = engine.query(video, top_k=args.top_k, min_score=args.min_score,
                                      min_confidence=args.min_confidence)
        except InputError as exc:
            print(f"FAILED [{exc.code}] {exc.message}", file=sys.stderr)
            if args.json:  # one line per query on stdout, failed or not, so that a script can zip them up
                print(json.dumps({"query": video, "error": {"code": exc.code, "message": exc.message}}), flush=True)
            status = exc.exit_code if status in (0, exc.exit_code) else InputError.MIXED
            continue
        print(json.dumps(result) if args.json else _format_table(result), flush=True)
    return status


def cmd_list(args: argparse.Namespace) -> int:
    from indexer.backends import open_existing

    store = open_existing(_settings(args), _existing_data(args))  # rows only: no model is loaded to list them
    records = store.list(offset=args.offset, limit=args.limit)
    for r in records:
        if args.json:
            print(json.dumps(r.public()))
        else:
            print(f"{r.id}  {r.duration:8.1f}s  {r.frames:6d} frames  {r.source}")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    """Rows and feature files go now; the FAISS index, derived from the rows, drops them when next opened."""
    from indexer.backends import open_existing

    store = open_existing(_settings(args), _existing_data(args))
    status = 0
    for video_id in args.ids:
        if store.delete(video_id):
            print(f"deleted {video_id}")
        else:
            print(f"FAILED [not_found] no indexed video with id {video_id}", file=sys.stderr)
            status = InputError.EXIT_CODES["not_found"]
    store.checkpoint()
    return status


def cmd_duplicates(args: argparse.Namespace) -> int:
    """Duplicate sets of the whole collection: a JSON object, CSV rows (one per grouped video) or a table."""
    from tqdm import tqdm

    engine = _engine(args)
    bar = tqdm(total=100, unit="%", desc="scanning", disable=args.quiet or not sys.stderr.isatty())

    def progress(stage: str, fraction: float) -> None:
        bar.n = round(fraction * 100)
        bar.refresh()

    try:
        result = engine.duplicates(min_confidence=args.min_confidence, progress=progress)
    finally:
        bar.close()
        engine.save()
    if args.json:
        print(json.dumps(result))
    elif args.csv:
        import csv

        writer = csv.writer(sys.stdout)
        writer.writerow(["group", "video_id", "source", "representative", "duration", "width", "height",
                         "best_confidence"])
        for number, group in enumerate(result["groups"], 1):
            best: dict[str, float] = {}
            for pair in group["pairs"]:
                for end in (pair["a"], pair["b"]):
                    best[end] = max(best.get(end, 0.0), pair["confidence"])
            for video in group["videos"]:
                writer.writerow([number, video["id"], video["source"], video["id"] == group["representative"],
                                 video["duration"], video["width"], video["height"], best.get(video["id"], "")])
    else:
        print(f"{len(result['groups'])} duplicate sets, {result['grouped']} of {result['videos']} videos "
              f"(min confidence {result['min_confidence']:g}; {result['scanned_now']} videos scanned now, "
              f"{result['elapsed_s']:.1f} s)")
        for number, group in enumerate(result["groups"], 1):
            print(f"set {number}: {len(group['videos'])} videos")
            for video in group["videos"]:
                mark = "*" if video["id"] == group["representative"] else " "
                print(f"  {mark} {video['id']}  {video['duration']:8.1f}s  {video['width']}x{video['height']}  "
                      f"{video['source']}")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    info = _engine(args).info()
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:>15}: {value}")
    return 0


def cmd_repair(args: argparse.Namespace) -> int:
    done = _engine(args).repair(min_age_s=args.min_age)
    print(f"{done['videos']} videos; {done['orphan_features_removed']} orphan feature arrays removed; "
          f"coarse index: {done['coarse_changes']} changes caught up")
    return 0


def _sampled_frames(files: list[Path], fps: float, size_for, quiet: bool) -> Iterator:
    """Frames of each file, one decoded batch at a time, for learning an encoder asset (PCA, int8
    ranges): short clips sampled densely, unreadable files skipped with one line each."""
    from tqdm import tqdm

    from indexer.decode import iter_frames

    for path in tqdm(files, unit="video", disable=quiet):
        try:
            for batch in iter_frames(path, fps=fps, size_for=size_for, min_frames=16):
                yield batch.frames
        except InputError as exc:
            print(f"skipped [{exc.code}] {exc.message}", file=sys.stderr)


def cmd_learn_pca(args: argparse.Namespace) -> int:
    from config.settings import Settings
    from model.encoder import FrameEncoder
    from model.learn_pca import learn_and_save

    settings = Settings()
    encoder = FrameEncoder(settings.encoder_config(), device=settings.torch_device(), cache_dir=settings.cache_dir,
                           with_pca=False)
    files = list(expand_paths(args.paths))
    n = learn_and_save(encoder, _sampled_frames(files, args.fps, encoder.decode_size, args.quiet), Path(args.out),
                       dims=args.dims)
    print(f"learnt a {args.dims}-d PCA from {n} region vectors of {len(files)} videos: {args.out}")
    return 0


def cmd_calibrate_int8(args: argparse.Namespace) -> int:
    import numpy as np

    from config.settings import Settings
    from model import preprocess
    from model.encoder import FrameEncoder
    from model.quantize import calibrate

    settings = Settings()
    config = settings.encoder_config()
    if config.precision != "fp32":  # ranges are measured on the fp32 graph
        config = dataclasses.replace(config, precision="fp32", int8_ranges=None)
    encoder = FrameEncoder(config, device="cpu", runtime="onnx", cache_dir=settings.cache_dir)
    files = list(expand_paths(args.paths))
    batch = args.batch

    def batches():
        pending = np.zeros((0, config.size, config.size, 3), np.uint8)
        for frames in _sampled_frames(files, args.fps, encoder.decode_size, args.quiet):
            pending = np.concatenate([pending, preprocess.fit_frames(frames, config.size, config.resize_mode)])
            while len(pending) >= batch:  # the calibrator stacks batches: all the same size
                yield pending[:batch]
                pending = pending[batch:]

    calibrate(encoder.fp32_onnx_path, batches(), Path(args.out))
    print(f"measured int8 activation ranges on {len(files)} videos: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hapvr", description="Near-duplicate video retrieval with HAP-VR.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", required=True)

    def data_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data", help="data directory (default: $HAPVR_DATA or ./hapvr-data)")

    p = sub.add_parser("index", help="index video files or folders")
    p.add_argument("paths", nargs="+")
    data_arg(p)
    p.add_argument("--force", action="store_true", help="re-index files already indexed (same sha256)")
    p.add_argument("--metadata", help="JSON object stored with every video of this call")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--progress", action="store_true", help="progress bar even when not on a terminal")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("query", help="find indexed videos that contain (part of) each query video")
    p.add_argument("videos", nargs="+", help="video files (or ids with --id)")
    data_arg(p)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--min-confidence", type=_probability, default=None, metavar="P",
                   help="drop results whose calibrated confidence (probability of a copy) is below P, in 0..1; "
                        "e.g. 0.5, or 0.9 to keep only sure copies (docs/MODEL.md, 'Confidence')")
    p.add_argument("--min-score", type=float, default=None,
                   help="drop results whose raw re-rank score is below this (a ranking score, not a probability: "
                        "prefer --min-confidence)")
    p.add_argument("--json", action="store_true", help="one JSON object per query, one per line")
    p.add_argument("--id", action="store_true", help="arguments are ids of indexed videos")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("list", help="list indexed videos")
    data_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--limit", type=int, default=1000)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("delete", help="delete indexed videos by id")
    p.add_argument("ids", nargs="+")
    data_arg(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("duplicates", help="group the whole collection into sets of copies")
    data_arg(p)
    p.add_argument("--min-confidence", type=_probability, default=0.5, metavar="P",
                   help="sets hold together at this mean confidence of their pairs (default 0.5)")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="one JSON object: groups, videos, pairs and segments")
    form.add_argument("--csv", action="store_true", help="one row per grouped video")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_duplicates)

    p = sub.add_parser("info", help="counts, sizes and versions of a data directory")
    data_arg(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("repair", help="after a crash: remove features no video row names, bring the coarse "
                                      "index up to date with the catalog")
    data_arg(p)
    p.add_argument("--min-age", type=float, default=600.0, metavar="SECONDS",
                   help="only remove orphan features at least this old (younger ones may be about to commit)")
    p.set_defaults(func=cmd_repair)

    from indexer.train_cli import add_arguments, run

    p = sub.add_parser("train", help="self-supervised training of the similarity network on unlabeled videos")
    add_arguments(p)
    p.set_defaults(func=run)

    p = sub.add_parser("learn-pca", help="learn the encoder's PCA-whitening file from videos")
    p.add_argument("paths", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--fps", type=float, default=2.0)
    p.add_argument("--dims", type=int, default=512)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_learn_pca)

    p = sub.add_parser("calibrate-int8", help="measure the activation ranges of the int8 encoder on videos")
    p.add_argument("paths", nargs="+", help="video files or folders (real footage like what you will index)")
    p.add_argument("--out", required=True, help="ranges file to write (JSON); use it with HAPVR_INT8_RANGES")
    p.add_argument("--fps", type=float, default=1.0, help="frames sampled per second (default 1)")
    p.add_argument("--batch", type=int, default=16, help="frames per calibration batch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_calibrate_int8)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except InputError as exc:
        print(f"hapvr: [{exc.code}] {exc.message}", file=sys.stderr)
        return exc.exit_code
    except (json.JSONDecodeError, FileNotFoundError, ValueError) as exc:
        print(f"hapvr: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
