"""Key frames: small JPEGs of the frames the model saw, kept so that people can see a match.

Collected while a video is embedded (no second decode), at most HAPVR_KEYFRAMES of them spread evenly over
the sampled frames, scaled to HAPVR_KEYFRAME_HEIGHT pixels high. They are the encoder's frames, so with a
cropping resize mode they show the centre crop the features describe; a squashed frame is stretched back
to the video's display aspect. Stored as one zip per video (the
media store's `keyframes.zip`): `index.json` (`{"times": [...], "width", "height"}`) and `NNNN.jpg`.
A zip of stored JPEGs is a format every tool opens, and one object per video keeps S3 requests few.
"""
from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass
class KeyframeCollector:
    """Feed it each decoded batch; `pack` gives the zip. `expected` is about how many frames will be sampled."""

    expected: int
    limit: int = 120
    height: int = 96
    quality: int = 80
    #: width / height to show frames at (a squashing resize mode made them square), None: as decoded
    aspect: float | None = None
    times: list[float] = field(default_factory=list)
    jpegs: list[bytes] = field(default_factory=list)
    blank: list[bool] = field(default_factory=list)
    _seen: int = 0
    size: tuple[int, int] = (0, 0)

    @property
    def stride(self) -> int:
        return max(1, math.ceil(self.expected / max(1, self.limit)))

    def add(self, frames: np.ndarray, timestamps: np.ndarray, informative: np.ndarray | None = None,
            rotation: int = 0) -> None:
        """frames: N x H x W x 3 uint8 RGB; `informative`: which are not blank (model.preprocess);
        `rotation`: the display rotation the decoder applied (a turned video shows the coded aspect turned)."""
        turned = rotation in (90, 270) and self.aspect
        aspect = 1.0 / self.aspect if turned else self.aspect
        informative = np.ones(len(frames), dtype=bool) if informative is None else informative
        for frame, t, useful in zip(frames, timestamps, informative):
            if self._seen % self.stride == 0 and len(self.jpegs) < self.limit:
                image = Image.fromarray(np.ascontiguousarray(frame))
                width = max(1, round((aspect or image.width / max(1, image.height)) * self.height))
                image = image.resize((width, self.height), Image.Resampling.BILINEAR)
                buffer = io.BytesIO()
                image.save(buffer, format="JPEG", quality=self.quality)
                self.jpegs.append(buffer.getvalue())
                self.times.append(round(float(t), 3))
                self.blank.append(not bool(useful))
                self.size = (width, self.height)
            self._seen += 1

    def pack(self) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
            archive.writestr("index.json", json.dumps({"times": self.times, "blank": self.blank, "width": self.size[0],
                                                       "height": self.size[1]}))
            for i, jpeg in enumerate(self.jpegs):
                archive.writestr(f"{i:04d}.jpg", jpeg)
        return buffer.getvalue()


@dataclass
class Keyframes:
    """A video's stored key frames, read back from its zip."""

    times: list[float]
    blank: list[bool]
    width: int
    height: int
    archive: zipfile.ZipFile

    @classmethod
    def load(cls, body: bytes) -> "Keyframes":
        archive = zipfile.ZipFile(io.BytesIO(body))
        index = json.loads(archive.read("index.json"))
        return cls(index["times"], index.get("blank") or [False] * len(index["times"]), index["width"], index["height"], archive)

    def nearest(self, t: float) -> int:
        """The index of the key frame closest to `t` seconds."""
        if not self.times:
            raise KeyError("no key frames")
        return int(np.argmin(np.abs(np.asarray(self.times) - t)))

    def jpeg(self, i: int) -> bytes:
        return self.archive.read(f"{i:04d}.jpg")

    def thumbnail(self) -> bytes:
        """The key frame a card shows: the informative one nearest the middle (never a black intro)."""
        if not self.times:
            raise KeyError("no key frames")
        middle = len(self.times) // 2
        useful = [i for i, blank in enumerate(self.blank) if not blank] or [middle]
        return self.jpeg(min(useful, key=lambda i: abs(i - middle)))
