"""Deterministic video edits with PyAV + numpy/Pillow: the copies that queries are made of.

Each edit reads every frame of a source, transforms pixels and/or time, and
writes H.264 (or another codec). Used by the copy benchmark, the tests and
the demo, so that "an edited copy" means the same thing everywhere.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np


@dataclass
class Clip:
    frames: list[np.ndarray]  # H x W x 3 uint8 RGB
    fps: float

    @property
    def duration(self) -> float:
        return len(self.frames) / self.fps


def read_clip(path: str | Path, max_side: int | None = 640, fps: float | None = None) -> Clip:
    """All frames (optionally resampled to `fps` and downscaled so the long side <= max_side)."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        src_fps = float(stream.average_rate or 25)
        out_fps = fps or src_fps
        frames: list[np.ndarray] = []
        next_t = 0.0
        for frame in container.decode(stream):
            t = float(frame.time) if frame.time is not None else next_t
            if fps is not None and t + 1e-6 < next_t:
                continue
            w, h = frame.width, frame.height
            if max_side and max(w, h) > max_side:
                scale = max_side / max(w, h)
                w, h = max(2, round(w * scale) // 2 * 2), max(2, round(h * scale) // 2 * 2)
            image = frame.to_ndarray(width=w, height=h, format="rgb24")
            # every output tick up to this frame's time shows it: a source with gaps (dropped or repeated
            # frames left out of an AVI, a rate below `fps`) keeps its duration instead of being sped up
            while True:
                frames.append(image)
                next_t += 1.0 / out_fps
                if fps is None or t + 1e-6 < next_t:
                    break
    return Clip(frames, out_fps)


def write_clip(clip: Clip, path: str | Path, codec: str = "libx264", crf: int = 23,
               bitrate: int | None = None, pix_fmt: str = "yuv420p") -> Path:
    """Encode frames; sizes are rounded down to even numbers as yuv420p requires."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = clip.frames[0].shape[:2]
    w, h = w - w % 2, h - h % 2
    rate = Fraction(clip.fps).limit_denominator(1001)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if bitrate:
            stream.bit_rate = bitrate
        elif codec in ("libx264", "libx265"):
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        for rgb in clip.frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:h, :w]), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def map_frames(clip: Clip, fn: Callable[[np.ndarray], np.ndarray]) -> Clip:
    return Clip([fn(f) for f in clip.frames], clip.fps)


def excerpt(clip: Clip, start_s: float, end_s: float) -> Clip:
    a, b = int(round(start_s * clip.fps)), int(round(end_s * clip.fps))
    return Clip(clip.frames[a:b], clip.fps)


def crop(frame: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the centre, cutting `fraction` of each side's length in total."""
    h, w = frame.shape[:2]
    dy, dx = int(h * fraction / 2), int(w * fraction / 2)
    return frame[dy : h - dy, dx : w - dx]


def hflip(frame: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(frame[:, ::-1])


def text_overlay(frame: np.ndarray, text: str = "BREAKING NEWS 24/7", seed: int = 0) -> np.ndarray:
    """Large caption band over the lower part of the frame."""
    from PIL import Image, ImageDraw, ImageFont

    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    h, w = frame.shape[:2]
    size = max(12, h // 10)
    try:
        font = ImageFont.load_default(size=size)
    except TypeError:  # old Pillow
        font = ImageFont.load_default()
    draw.rectangle([0, int(h * 0.78), w, int(h * 0.92)], fill=(20, 20, 120))
    draw.text((w * 0.04, h * 0.79), text, fill=(255, 255, 0), font=font)
    return np.asarray(img)


def resize(frame: np.ndarray, scale: float) -> np.ndarray:
    from PIL import Image

    h, w = frame.shape[:2]
    size = (max(2, int(w * scale) // 2 * 2), max(2, int(h * scale) // 2 * 2))
    return np.asarray(Image.fromarray(frame).resize(size, Image.BILINEAR))
