"""Deterministic benchmark inputs: H.264 transcodes of the shared clips at fixed heights."""
from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av

from bench.copies.split import SHARED as SHARED_ROOT

ROOT = Path(__file__).resolve().parents[1]
SHARED = SHARED_ROOT / "permissive"  # the shared collection's clips (HAPVR_SHARED_VIDEOS)
OUT = ROOT / "bench" / "out"
SOURCES = ["sam2__01_dog.mp4", "sam2__02_cups.mp4", "sam2__03_blocks.mp4", "sam2__04_coffee.mp4",
           "sam2__05_juggle.mp4", "moviepy__big_buck_bunny_0_30.webm"]


def write_h264(frames: Iterable[av.VideoFrame], dst: Path, width: int, height: int, rate: Fraction | int,
               crf: int = 23) -> Path:
    """Encode yuv420p frames (pts = their index) with x264 veryfast to a temp name, then rename to `dst`."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = width, height, "yuv420p"
        vout.options = {"crf": str(crf), "preset": "veryfast"}
        for index, frame in enumerate(frames):
            frame.pts, frame.time_base = index, Fraction(1) / rate
            for packet in vout.encode(frame):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)
    tmp.replace(dst)
    return dst


def transcode(src: Path, dst: Path, height: int, crf: int = 23) -> Path:
    """Stream-transcode to H.264 at `height` (width keeps the aspect, rounded to even), same frame rate."""
    if dst.exists():
        return dst
    with av.open(str(src)) as inp:
        vin = inp.streams.video[0]
        vin.thread_type = "AUTO"
        width = round(vin.codec_context.width * height / vin.codec_context.height / 2) * 2
        rate = Fraction(vin.average_rate).limit_denominator(1001)
        scaled = (frame.reformat(width=width, height=height, format="yuv420p") for frame in inp.decode(vin))
        return write_h264(scaled, dst, width, height, rate, crf)


def h264_set(height: int) -> list[Path]:
    return [transcode(SHARED / name, OUT / f"{height}p" / f"{Path(name).stem}.mp4", height) for name in SOURCES]


def hour_long(height: int = 360, seconds: int = 3600, rate: int = 5) -> Path:
    """One `seconds`-long H.264 file made of the SOURCES clips played one after another, over and over.

    For disk and memory per indexed video-hour: a store of short clips carries
    SQLite's fixed overhead on very few frames. `rate` frames/s (not 25) keeps
    the one-off encode to about a minute; the indexer samples 1 frame/s anyway.
    """
    dst = OUT / f"{height}p" / f"hour_{seconds}s.mp4"
    if dst.exists():
        return dst
    clips = []
    for name in SOURCES:  # each source once, at `rate` frames/s, as yuv420p at the output size
        with av.open(str(SHARED / name)) as inp:
            vin = inp.streams.video[0]
            step, next_t = 1.0 / rate, 0.0
            for frame in inp.decode(vin):
                if frame.time is None or frame.time + 1e-6 < next_t:
                    continue
                next_t += step
                clips.append(frame.reformat(width=640, height=height, format="yuv420p").to_ndarray())
    frames = (av.VideoFrame.from_ndarray(clips[i % len(clips)], format="yuv420p") for i in range(seconds * rate))
    return write_h264(frames, dst, 640, height, rate)
