"""Adapters for the systems users would pick instead, each: signature(path) and similarity(sig_q, sig_t).

Optional dependencies (`pip install .[bench]`); an adapter whose package is missing reports itself
unavailable and the benchmark leaves its column out, saying why.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer.decode import iter_frames


@contextlib.contextmanager
def _quiet_fds():
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)


@dataclass
class Peer:
    name: str
    why_unavailable: str | None = None

    def signature(self, path: Path) -> Any:
        raise NotImplementedError

    def similarity(self, query: Any, target: Any) -> float:
        raise NotImplementedError


class PHashChamfer(Peer):
    """Per-frame 64-bit pHash (imagehash) at 1 fps; video similarity = Chamfer over 1 - Hamming/64."""

    def __init__(self) -> None:
        super().__init__("pHash + Chamfer")
        try:
            import imagehash  # noqa: F401
        except ImportError:
            self.why_unavailable = "imagehash not installed (pip install .[bench])"

    def signature(self, path: Path) -> np.ndarray:
        import imagehash
        from PIL import Image

        bits = []
        for batch in iter_frames(path, fps=1.0, min_frames=8):
            for frame in batch.frames:
                bits.append(imagehash.phash(Image.fromarray(frame)).hash.flatten())
        return np.asarray(bits, dtype=bool)

    def similarity(self, query: np.ndarray, target: np.ndarray) -> float:
        hamming = (query[:, None, :] != target[None, :, :]).sum(-1)
        return float((1 - hamming / 64.0).max(axis=1).mean())


class TMK(Peer):
    """Meta's TMK+PDQF (tmkpy); level-2 score. Needs the ffmpeg binary; an all-zero signature means it failed."""

    def __init__(self) -> None:
        super().__init__("TMK+PDQF")
        self.ffmpeg = shutil.which("ffmpeg")
        try:
            import tmkpy  # noqa: F401
        except ImportError:
            self.why_unavailable = "tmkpy not installed (needs swig, ffmpeg; pip install .[bench])"
            return
        if not self.ffmpeg:
            self.why_unavailable = "the ffmpeg binary is not on PATH"

    def signature(self, path: Path):
        import tmkpy

        with _quiet_fds():  # tmkpy lets ffmpeg print its whole log
            sig = tmkpy.hashVideo(str(path), self.ffmpeg)
        if not np.any(np.asarray(sig.getPureAverageFeature())):
            raise RuntimeError(f"tmkpy returned an all-zero signature for {path} (ffmpeg failed)")
        return sig

    def similarity(self, query, target) -> float:
        import tmkpy

        return float(tmkpy.TMKFeatureVectors.computeLevel2Score(query, target))


class VPDQ(Peer):
    """vPDQ: one PDQ hash per second; similarity = share of query frames with a target frame within 31 bits."""

    def __init__(self) -> None:
        super().__init__("vPDQ")
        try:
            import vpdq  # noqa: F401
        except ImportError:
            self.why_unavailable = "vpdq not installed (needs CMake and libav*-dev; pip install .[bench])"

    def signature(self, path: Path) -> np.ndarray:
        import vpdq

        frames = vpdq.computeHash(str(path), seconds_per_hash=1)
        bits = [np.unpackbits(np.frombuffer(bytes.fromhex(f.hex), dtype=np.uint8)) for f in frames if f.quality >= 50]
        return np.asarray(bits, dtype=bool).reshape(len(bits), 256)

    def similarity(self, query: np.ndarray, target: np.ndarray) -> float:
        if len(query) == 0 or len(target) == 0:
            return 0.0
        dist = (query[:, None, :] != target[None, :, :]).sum(-1)
        return float((dist.min(axis=1) <= 31).mean())


class VideoHash(Peer):
    """videohash2: one 64-bit hash of a frame collage; similarity = 1 - Hamming/64."""

    def __init__(self) -> None:
        super().__init__("videohash")
        try:
            import videohash2  # noqa: F401
        except ImportError:
            self.why_unavailable = "videohash2 not installed (needs ffmpeg; pip install .[bench])"
            return
        if not shutil.which("ffmpeg"):
            self.why_unavailable = "the ffmpeg binary is not on PATH"

    def signature(self, path: Path) -> str:
        from videohash2 import VideoHash as VH

        return VH(path=str(path)).hash

    def similarity(self, query: str, target: str) -> float:
        return 1 - bin(int(query, 2) ^ int(target, 2)).count("1") / 64.0  # int() accepts the "0b" prefix


def all_peers() -> list[Peer]:
    return [PHashChamfer(), TMK(), VPDQ(), VideoHash()]
