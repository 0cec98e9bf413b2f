"""Helpers that write small real video files with PyAV for decoder and error tests."""
from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def pattern(i: int, width: int, height: int) -> np.ndarray:
    """A moving gradient with a bright square: different on every frame, compressible."""
    y, x = np.mgrid[0:height, 0:width]
    frame = np.stack([(x * 3 + i * 7) % 256, (y * 2 + i * 5) % 256, ((x + y) + i * 11) % 256], -1).astype(np.uint8)
    s = max(4, min(width, height) // 4)
    ox, oy = (i * 3) % max(1, width - s), (i * 2) % max(1, height - s)
    frame[oy : oy + s, ox : ox + s] = 255
    return frame


def write_video(path: Path, codec: str = "libx264", size: tuple[int, int] = (160, 96), frames: int = 40,
                fps: int = 10, pix_fmt: str = "yuv420p", pts_seconds: list[float] | None = None,
                options: dict[str, str] | None = None) -> Path:
    """Write `frames` pattern frames; `pts_seconds` gives explicit (e.g. variable-rate) timestamps."""
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if options:
            stream.options = options
        if pts_seconds is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(pattern(i, width, height), format="rgb24")
            if pts_seconds is not None:
                frame.pts = int(pts_seconds[i] * 1000)
                frame.time_base = Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 1.0) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = int(16000 * seconds)
        tone = (np.sin(np.arange(samples) / 10) * 0.3).astype(np.float32)[None, :]
        for start in range(0, samples, 1024):
            frame = av.AudioFrame.from_ndarray(tone[:, start : start + 1024], format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_png(path: Path) -> Path:
    from PIL import Image

    Image.fromarray(pattern(0, 64, 48)).save(path)
    return path


def rotate_mp4(src: Path, dst: Path) -> Path:
    """Copy an MP4 and set its track's display matrix to a 90-degree rotation (as phones write it)."""
    data = bytearray(src.read_bytes())
    box = data.find(b"tkhd") - 4
    version = data[box + 8]
    matrix = box + (60 if version == 1 else 48)
    data[matrix : matrix + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    dst.write_bytes(bytes(data))
    return dst
