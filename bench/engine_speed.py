"""Engine throughput and size on real video: indexing vs decode-only, query latency, disk per video-hour.

Indexing target (issue #3): >= 0.7 x PyAV's decode-only throughput on the same
files at the same sampling, i.e. decoding is the bottleneck.
"""
from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

from bench.report import engine_config, publish, table
from bench.samples import SHARED, h264_set, hour_long
from indexer.decode import iter_frames, probe
from indexer.engine import Engine
from config.settings import Settings


def decode_only(engine: Engine, files: list[Path]) -> float:
    s = engine.settings
    for f in files:
        for _ in iter_frames(f, fps=s.sample_fps, size_for=engine.encoder.decode_size, batch_size=s.encode_batch,
                             min_frames=s.min_frames):
            pass
    return 0.0


def _disk(root: Path, engine: Engine, seconds: float, label: str | None = None) -> list:
    info = engine.info()
    total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    return [label or root.name, round(seconds), info["frames"], round(info["features_bytes"] / 1e6, 2),
            round(info["faiss_bytes"] / 1e6, 2), round(info["sqlite_bytes"] / 1e6, 2),
            round(total / 1e6 / (seconds / 3600), 1)]


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hapvr-bench-"))
    rows, disk_rows = [], []
    try:
        engine = Engine(Settings(data=work / "warm"))
        engine.index(SHARED / "intel__asl_again.mkv")  # load models, export ONNX once
        for height in (360, 720):
            files = h264_set(height)
            seconds = sum(probe(f).duration for f in files)
            decode_s = index_s = float("inf")
            for attempt in range(2):  # interleaved, best of two: this VM's speed drifts by 10-20%
                decode_s = min(decode_s, timed(lambda: decode_only(engine, files)))
                # models loaded once, as in a worker
                fresh = Engine(Settings(data=work / f"idx{height}-{attempt}"), models=engine.models)
                index_s = min(index_s, timed(lambda: list(fresh.index_many(files))))  # as `hapvr index` does
                fresh.save()
            disk_rows.append(_disk(work / f"idx{height}-1", fresh, seconds, f"{height}p, 6 files"))
            rows.append([f"{height}p H.264 ({len(files)} files, {seconds:.0f} s)", round(seconds / decode_s, 1),
                         round(seconds / index_s, 1), round(decode_s / index_s, 2)])
        # an hour-long file: disk per video-hour without a tiny store's fixed SQLite overhead, and flat memory
        hour = hour_long(360)
        long = Engine(Settings(data=work / "hour"), models=engine.models)
        peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        hour_s = timed(lambda: list(long.index_many([hour])))
        peak_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        long.save()
        disk_rows.append(_disk(work / "hour", long, probe(hour).duration, "1 h 360p H.264 file"))
        hour_decode_s = timed(lambda: decode_only(engine, [hour]))
        rows.append([f"360p H.264 at 5 frames/s, one {probe(hour).duration / 3600:.0f} h file",
                     round(3600 / hour_decode_s, 1), round(3600 / hour_s, 1), round(hour_decode_s / hour_s, 2)])
        # the whole shared collection: many 2-5 s clips, sampled densely (>= 8 frames each)
        store = Engine(Settings(data=work / "all"), models=engine.models)
        config = engine_config(store)
        clips = sorted(p for p in SHARED.iterdir() if p.is_file())
        list(store.index_many(clips))
        store.save()
        disk_rows.append(_disk(work / "all", store, store.store.total_duration(), f"{len(clips)} shared clips"))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = table(["input", "decode-only video-s/s", "indexing video-s/s", "indexing / decode"], rows)
    body += "\n\n" + table(["store", "video s", "frames", "features MB", "FAISS MB", "SQLite MB",
                             "MB per video-hour"], disk_rows)
    body += (f"\n\nPeak RSS of this process: {peak_before:.0f} MB before indexing the hour-long file, "
             f"{peak_after:.0f} MB after. Frames are streamed in batches; what grows with length is the video's own "
             "features (33 MB per hour in fp16, held while they are written and added to FAISS) and transient "
             "copies of them.")
    body += ("\n\nDecode-only is a plain loop over the files with PyAV (threaded decoding within a file, the same "
             "sampling and scaling as indexing); indexing also decodes the next file while the current one is "
             "embedded (`indexer/prefetch.py`), which is how it can exceed 1 at 720p, where decoding dominates. "
             "Where the ratio is below 0.7 (the hour-long file at 5 frames/s, which decodes fastest), embedding "
             "is the bottleneck: the encoder's CPU per sampled frame (`python -m bench.encoder_speed`) is close to "
             "what decoding that video costs, and two cores cannot hide one behind the other. The defaults (176-"
             "pixel input; the int8 encoder on a CPU with int8 dot products) cut the encoder's CPU per frame to "
             "about a third of 224 fp32's (`python -m bench.frame_size`).")
    body += ("\n\nTarget: <= 40 MB per indexed video-hour. At 1 fps an hour is 3,600 frames x 9 KiB (fp16 9x512 "
             "region features) + FAISS (1 KiB fp16 per frame while flat, 0.5 KiB once IVF-SQ8). The shared "
             "collection is mostly 2-5 s clips sampled densely to at least 8 frames, hence more frames per second.")
    body += f"\n\nEngine: {config}."
    publish("indexing", "Indexing throughput and disk", "python -m bench.engine_speed", body, print_only=args.no_write)


if __name__ == "__main__":
    main()
