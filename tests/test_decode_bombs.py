"""Decompression bombs: small files that declare huge frames or millions of frames are refused in `probe`,
before any decoding, and a file that delivers far more frames than it declared is stopped mid-decode.

The bombs are real files written with PyAV, then edited in the fields a hostile file would lie in
(Matroska PixelWidth/PixelHeight and Duration, QuickTime stts/stsz/stsc/mdhd).
"""
from __future__ import annotations

import resource
import struct
import time
from pathlib import Path

import av
import numpy as np
import pytest

from indexer.decode import Limits, iter_frames, probe
from indexer.errors import InputError


def _write(path: Path, codec: str, fmt: str, size: int, frames: int, pix_fmt: str) -> Path:
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = pix_fmt
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), (i * 7) % 255, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _patch_box(data: bytes, tag: bytes, offset: int, value: int) -> bytes:
    """Overwrite the 32-bit field `offset` bytes after a QuickTime box's tag."""
    at = data.find(tag)
    assert at > 0, tag
    out = bytearray(data)
    struct.pack_into(">I", out, at + offset, value)
    return bytes(out)


def mkv_declaring(tmp_path: Path, side: int) -> Path:
    """A one-frame 256x256 raw-video Matroska whose track header then declares side x side frames."""
    data = bytearray(_write(tmp_path / "small.mkv", "rawvideo", "matroska", 256, 1, "gray").read_bytes())
    for element in (b"\xb0\x82\x01\x00", b"\xba\x82\x01\x00"):  # PixelWidth, PixelHeight = 256 (2 bytes)
        at = data.find(element)
        assert at > 0
        data[at + 2 : at + 4] = struct.pack(">H", side)
    path = tmp_path / f"declares-{side}.mkv"
    path.write_bytes(bytes(data))
    return path


def mov_declaring_million_frames(tmp_path: Path, tick: int) -> Path:
    """A 50-frame 16x16 QuickTime file (constant-size raw samples: no per-sample table) edited to declare
    10^6 frames `tick` time units apart (the time scale is 12800/s)."""
    data = _write(tmp_path / "small.mov", "rawvideo", "mov", 16, 50, "gray").read_bytes()
    assert data.find(b"stts") > 0 and struct.unpack_from(">I", data, data.find(b"mdhd") + 16)[0] == 12800
    data = _patch_box(data, b"stts", 12, 1_000_000)  # the one stts entry: sample count ...
    data = _patch_box(data, b"stts", 16, tick)  # ... and its duration
    data = _patch_box(data, b"stsz", 12, 1_000_000)  # sample count (the sample size is constant)
    data = _patch_box(data, b"stsc", 16, 1_000_000)  # every sample in the one chunk
    data = _patch_box(data, b"mdhd", 20, 1_000_000 * tick)  # the track's duration
    path = tmp_path / f"million-{tick}.mov"
    path.write_bytes(data)
    return path


def _refused(path: Path, limits: Limits = Limits()) -> tuple[InputError, float, int]:
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    with pytest.raises(InputError) as caught:
        probe(path, limits)
    return caught.value, time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before


def test_a_small_file_declaring_16k_by_16k_frames_is_refused_at_once(tmp_path):
    path = mkv_declaring(tmp_path, 16384)
    assert path.stat().st_size < 100_000
    error, seconds, grown_kb = _refused(path)
    assert error.code == "bad_dimensions", error
    assert seconds < 1.0 and grown_kb < 100_000


def test_frames_over_the_pixel_limit_are_refused_before_decoding(tmp_path):
    """12000x12000 is a size FFmpeg accepts; our limit (8192x8192 by default) refuses it in probe."""
    path = mkv_declaring(tmp_path, 12000)
    error, seconds, grown_kb = _refused(path)
    assert error.code == "bad_dimensions" and "12000x12000" in str(error), error
    assert seconds < 1.0 and grown_kb < 100_000
    assert probe(path, Limits(max_pixels=12000 * 12000)).width == 12000  # the edit is what is refused


@pytest.mark.parametrize("tick", [1, 512])
def test_a_small_file_declaring_a_million_frames_is_refused_at_once(tmp_path, tick):
    """10^6 frames at 12800/s break the frame-rate limit; at 25/s they would be 11 hours, but the edit list
    still shows 2 s, and 10^6 frames in 2 s break it too."""
    path = mov_declaring_million_frames(tmp_path, tick)
    assert path.stat().st_size < 100_000
    error, seconds, grown_kb = _refused(path)
    assert error.code == "bad_dimensions" and ("1000000 frames" in str(error) or "frame rate" in str(error)), error
    assert seconds < 2.0 and grown_kb < 200_000


def test_a_file_delivering_far_more_frames_than_it_declares_is_stopped(tmp_path):
    """4,000 real frames (160 s at 25/s) under a Matroska Duration edited to 1 s: probe believes the header,
    decoding stops at the frame budget of what was declared instead of running on."""
    data = bytearray(_write(tmp_path / "many.mkv", "mpeg4", "matroska", 16, 4000, "yuv420p").read_bytes())
    at = data.find(b"\x44\x89\x88")  # Duration, an 8-byte float in milliseconds
    assert at > 0
    struct.pack_into(">d", data, at + 3, 1000.0)
    path = tmp_path / "many-declared-1s.mkv"
    path.write_bytes(bytes(data))
    info = probe(path)
    assert info.duration == pytest.approx(1.0)
    with pytest.raises(InputError) as caught:
        for _ in iter_frames(path, size_for=lambda w, h: (32, 32), info=info):
            pass
    assert caught.value.code == "truncated" and "declared" in str(caught.value)
    # the untouched file decodes whole: the budget is about the lie, not the length
    frames = sum(len(b.timestamps) for b in iter_frames(tmp_path / "many.mkv", size_for=lambda w, h: (32, 32)))
    assert frames == 160
