"""Index the sample clips, make an edited copy of one, and query with it and with a natural near-duplicate.

Runs on the embedded engine (no server, no Redis). `make demo` calls this.
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

from tqdm import tqdm

from bench import videoedit as ve
from indexer.cli import _format_table
from indexer.engine import Engine
from config.settings import Settings

HERE = Path(__file__).resolve().parent
CLIPS = HERE / "videos"
# held out of the index: it is the GIF preview (a downscaled, palettised excerpt) of bottle-detection
NATURAL_COPY = "intel__preview_bottle-detection.mp4"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("hapvr-data-demo"))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    shutil.rmtree(args.data, ignore_errors=True)
    engine = Engine(Settings(data=args.data))
    collection = sorted(p for p in CLIPS.iterdir() if p.suffix in (".mp4", ".mkv") and p.name != NATURAL_COPY)
    for path in tqdm(collection, desc="indexing", unit="video"):
        engine.index(path)
    engine.save()
    print(f"\nindexed {engine.store.count()} videos into {args.data}\n")

    # An edited copy: 12 s excerpt (from 20 s), cropped by 20%, mirrored, with a caption, re-encoded small.
    queries = args.data / "queries"
    source = ve.read_clip(CLIPS / "intel__bottle-detection.mp4", max_side=480)
    edited = ve.map_frames(ve.excerpt(source, 20, 32), lambda f: ve.text_overlay(ve.hflip(ve.crop(f, 0.2))))
    copy = ve.write_clip(edited, queries / "edited_copy_of_bottle-detection.mp4", crf=32)
    print("query 1: an edited copy of intel__bottle-detection.mp4 = its 20-32 s excerpt, cropped 20%, "
          "mirrored, captioned, re-encoded")
    print(_format_table(engine.query(copy, top_k=3)))
    print(f"\nquery 2: {NATURAL_COPY}, the clip's own GIF preview (a downscaled, palettised excerpt)")
    print(_format_table(engine.query(CLIPS / NATURAL_COPY, top_k=3)))


if __name__ == "__main__":
    main()
