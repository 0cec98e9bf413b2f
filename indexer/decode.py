"""PyAV decoding: probe and validate a file, then stream frames sampled at a fixed rate.

Frames are decoded in order (threaded) and the first frame at or after each
sampling instant is kept. For codecs with B-frames the decoder skips
non-reference frames, which nothing references and we rarely sample: ~30%
faster on H.264 at 360p and 720p; seeking to each sample was ~3x slower
(bench/decode_strategies.py, numbers in docs/BENCHMARKS.md).
Frames are scaled by swscale straight to the encoder's input size, which keeps
memory flat: an hour of video never exists as full-size RGB in memory.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from config.limits import Limits
from indexer.errors import InputError

log = logging.getLogger(__name__)
# No FFmpeg log callback into Python at all (PyAV's default, enforced here): with one installed, even at
# PANIC, a decoder thread that logs while the main thread frees the codec deadlocks on the GIL (seen here
# with threaded H.264 decoding; PyAV-Org/PyAV#751, #909). Damage is reported through InputError instead.
av.logging.set_level(None)

VIDEO_EXTENSIONS = frozenset(
    ".mp4 .m4v .mkv .webm .avi .mov .mpg .mpeg .ts .m2ts .mts .wmv .flv .3gp .ogv .gif .mxf".split()
)


@dataclass(frozen=True)
class VideoInfo:
    duration: float  # seconds
    fps: float  # average frame rate of the stream
    width: int
    height: int
    codec: str


@dataclass
class FrameBatch:
    timestamps: np.ndarray  # seconds, float64, one per frame
    frames: np.ndarray  # N x H x W x 3 uint8 RGB
    #: the display rotation applied to these frames (degrees, 90-degree steps): a squashed frame is square,
    #: so this is how a front end learns that a phone video's displayed aspect is the coded one turned
    rotation: int = 0


#: codecs whose non-reference (B-)frames may be skipped when sampling sparsely
SKIP_NONREF_CODECS = frozenset({"h264", "hevc", "mpeg4", "mpeg2video", "mpeg1video"})

#: codecs decoded with slice threading instead of FFmpeg's default (frame + slice): sampling 1 frame/s with
#: non-reference frames skipped, it is 25-30% faster for H.264 at 360p and 720p (`python -m bench.decode_strategies`)
SLICE_THREAD_CODECS = frozenset({"h264"})

#: leading bytes of containers that hold video: a file that starts like one but does not open is damaged
CONTAINER_MAGIC = {
    "MP4/MOV": lambda h: h[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"),
    "Matroska/WebM": lambda h: h[:4] == b"\x1a\x45\xdf\xa3",
    "AVI": lambda h: h[:4] == b"RIFF" and h[8:12] == b"AVI ",
    "MPEG-TS": lambda h: h[:1] == b"\x47" and len(h) > 188 and h[188:189] == b"\x47",
    "MPEG-PS": lambda h: h[:4] == b"\x00\x00\x01\xba",
    "FLV": lambda h: h[:3] == b"FLV",
    "Ogg": lambda h: h[:4] == b"OggS",
    "GIF": lambda h: h[:4] == b"GIF8",
    "YUV4MPEG": lambda h: h[:9] == b"YUV4MPEG2",
    "ASF/WMV": lambda h: h[:4] == b"\x30\x26\xb2\x75",
}


#: demuxers of still images; animated GIF ("gif") is accepted as video
IMAGE_FORMATS = frozenset({"image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "tty"})


def sniff(head: bytes) -> str | None:
    """The video container that a file's first bytes (>= 512 if available) announce, or None."""
    return next((name for name, test in CONTAINER_MAGIC.items() if test(head)), None)


def container_kind(path: Path) -> str | None:
    """The container a file's first bytes announce, if any (content sniffing, no decoding)."""
    with open(path, "rb") as handle:
        return sniff(handle.read(512))


def _open(path: Path) -> av.container.InputContainer:
    try:
        return av.open(str(path), metadata_errors="ignore")
    except FileNotFoundError:
        raise InputError("not_found", f"{path}: no such file") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        kind = container_kind(path)
        if kind:
            raise InputError("truncated", f"{path}: a {kind} file that cannot be read (truncated or corrupt)") from None
        raise InputError("not_a_video", f"{path}: not a video file ({exc.__class__.__name__})") from None


def probe(path: str | Path, limits: Limits = Limits()) -> VideoInfo:
    """Validate container, stream, dimensions, size and duration without decoding much."""
    path = Path(path)
    if not path.is_file():
        raise InputError("not_found", f"{path}: no such file")
    size = path.stat().st_size
    if size == 0:
        raise InputError("not_a_video", f"{path}: empty file")
    if size > limits.max_bytes:
        raise InputError("too_large", f"{path}: {size} bytes exceeds the limit of {limits.max_bytes}")
    try:
        with _open(path) as container:
            if not container.streams:
                raise InputError("truncated", f"{path}: a container with no readable stream (truncated or corrupt)")
            if not container.streams.video:
                raise InputError("no_video_stream", f"{path}: has no video stream")
            if container.format.name in IMAGE_FORMATS or container.format.name.endswith("_pipe"):
                raise InputError("not_a_video", f"{path}: a still image ({container.format.name}), not a video")
            stream = container.streams.video[0]
            ctx = stream.codec_context
            if ctx is None:  # PyAV has no decoder for the stream's (damaged) codec id
                raise InputError("truncated", f"{path}: a video stream with no usable codec (truncated or corrupt)")
            width, height = int(ctx.width or 0), int(ctx.height or 0)
            if width < limits.min_side or height < limits.min_side or width * height > limits.max_pixels:
                raise InputError("bad_dimensions", f"{path}: unusable dimensions {width}x{height}")
            fps = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
            if not math.isfinite(fps) or fps > limits.max_fps:
                raise InputError("bad_dimensions",
                                 f"{path}: frame rate {fps:.0f}/s exceeds the limit of {limits.max_fps:.0f}")
            duration = _duration(container, stream)
            declared = int(stream.frames or 0)
            if declared and duration <= 0:
                duration = declared / fps
            if not math.isfinite(duration) or duration < 0:
                raise InputError("truncated", f"{path}: unreadable duration (truncated or corrupt)")
            if declared > max(duration, 1.0) * limits.max_fps:
                raise InputError("bad_dimensions", f"{path}: declares {declared} frames in {duration:.1f} s, over "
                                                   f"{limits.max_fps:.0f} frames/s")
            if duration > limits.max_duration_s:
                raise InputError("too_long",
                                 f"{path}: {duration:.0f} s exceeds the limit of {limits.max_duration_s:.0f} s")
            codec = ctx.name or "unknown"
    except (av.error.FFmpegError, ValueError, OverflowError, ZeroDivisionError) as exc:
        raise InputError("truncated", f"{path}: unreadable stream header ({exc.__class__.__name__})") from None
    return VideoInfo(duration=duration, fps=fps, width=width, height=height, codec=codec)


def _duration(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return container.duration / av.time_base
    if stream.frames and stream.average_rate:
        return float(stream.frames / stream.average_rate)
    return 0.0


def sampling_rate(duration: float, source_fps: float, wanted_fps: float, min_frames: int) -> float:
    """`wanted_fps` normally; denser for clips too short to give `min_frames` samples; never above the source."""
    rate = wanted_fps if wanted_fps > 0 else source_fps
    if duration > 0 and duration * rate < min_frames:
        rate = min_frames / duration
    return min(rate, source_fps) if source_fps > 0 else rate


def iter_frames(
    path: str | Path,
    fps: float = 1.0,
    size_for: Callable[[int, int], tuple[int, int]] = lambda w, h: (w, h),
    batch_size: int = 64,
    min_frames: int = 8,
    limits: Limits = Limits(),
    info: VideoInfo | None = None,
) -> Iterator[FrameBatch]:
    """Yield RGB frames sampled at `fps` (raised for very short clips), `batch_size` at a time.

    `size_for(w, h)` gives the output size for a displayed (rotated) w x h
    frame. `info` is the file's `probe` when the caller already has it (it is
    not opened twice). Raises InputError("truncated") when nothing decodes.
    """
    path = Path(path)
    info = info or probe(path, limits)
    step = 1.0 / sampling_rate(info.duration, info.fps, fps, min_frames)
    got_any = False
    rotation = 0
    next_t = 0.0
    stamps: list[float] = []
    frames: list[np.ndarray] = []
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE" if stream.codec_context.name in SLICE_THREAD_CODECS else "AUTO"
        if step >= 0.25 and stream.codec_context.name in SKIP_NONREF_CODECS:
            stream.codec_context.skip_frame = "NONREF"
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        max_frames, decoded = limits.max_frames(info), 0
        try:
            for frame in _decoded(container, stream):
                decoded += 1
                if decoded > max_frames:
                    raise InputError("truncated", f"{path}: over {max_frames} frames where {info.duration:.1f} s at "
                                                  f"{info.fps:.0f}/s were declared (corrupt or hostile)")
                if frame.width * frame.height > limits.max_pixels or min(frame.width, frame.height) < limits.min_side:
                    raise InputError("bad_dimensions", f"{path}: a frame of {frame.width}x{frame.height} mid-stream")
                t = (float(frame.pts * stream.time_base) - start) if frame.pts is not None else next_t
                if not math.isfinite(t):
                    t = next_t
                if t + 1e-6 < next_t:
                    continue
                rgb = _to_rgb(frame, size_for)
                rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
                stamps.append(max(t, 0.0))
                frames.append(rgb)
                got_any = True
                # Skip the instants this frame already covers (VFR gaps, low-fps sources).
                next_t = (math.floor(t / step + 1e-6) + 1) * step
                if len(frames) >= batch_size:
                    yield FrameBatch(np.asarray(stamps), np.stack(frames), rotation)
                    stamps, frames = [], []
        except (av.error.FFmpegError, ValueError, OverflowError, ZeroDivisionError) as exc:
            # ValueError & co.: PyAV's own checks on nonsense fields (a pixel format it cannot convert,
            # a timestamp out of range) are damage too, not a bug to surface as a 500
            if not got_any:
                raise InputError("truncated", f"{path}: no decodable video frames ({exc.__class__.__name__})") from None
            log.warning("%s: decoding stopped early at %.1f s (%s); keeping what decoded", path, next_t, exc)
    if not got_any:
        raise InputError("truncated", f"{path}: no decodable video frames")
    covered = next_t if not stamps else max(next_t, stamps[-1])
    if info.duration > 2.0 and covered < 0.5 * info.duration:
        raise InputError("truncated", f"{path}: only {covered:.1f} s of the declared {info.duration:.1f} s decode "
                                      "(truncated or corrupt)")
    if frames:
        yield FrameBatch(np.asarray(stamps), np.stack(frames), rotation)


def _decoded(container, stream) -> Iterator[av.VideoFrame]:
    """The stream's frames, decoded packet by packet. An empty packet with a timestamp is a frame the muxer
    marks as a repeat of the previous one (Theora in Ogg does this for dropped frames): it holds nothing
    to decode, and sending it to the decoder would flush it mid-stream, after which every packet fails
    with EINVAL. The empty packet without a timestamp that ends the demuxing does flush it, as it should."""
    for packet in container.demux(stream):
        if packet.size == 0 and packet.pts is not None:
            continue
        yield from packet.decode()


def _to_rgb(frame: av.VideoFrame, size_for: Callable[[int, int], tuple[int, int]]) -> np.ndarray:
    """Scale with swscale, then apply the display rotation (90-degree steps)."""
    rotation = int(round(getattr(frame, "rotation", 0) or 0)) % 360
    w, h = frame.width, frame.height
    if rotation in (90, 270):
        tw, th = size_for(h, w)
        rgb = frame.to_ndarray(width=th, height=tw, format="rgb24")
    else:
        tw, th = size_for(w, h)
        rgb = frame.to_ndarray(width=tw, height=th, format="rgb24")
    if rotation:
        # frame.rotation is counter-clockwise degrees to apply for display
        rgb = np.ascontiguousarray(np.rot90(rgb, k=rotation // 90))
    return rgb


def decode_all(path: str | Path, **kwargs) -> FrameBatch:
    """Convenience for tests and small clips: every sampled frame in one batch."""
    batches = list(iter_frames(path, **kwargs))
    return FrameBatch(np.concatenate([b.timestamps for b in batches]), np.concatenate([b.frames for b in batches]))


def training_frames(path: Path, fps: float = 1.0) -> np.ndarray:
    """Every frame `hapvr train` samples from `path` (short clips densely), at 256 x 256: the input of the
    training cache (`model.train.build_cache`, which leaves decoding to its caller)."""
    return np.concatenate([b.frames for b in iter_frames(path, fps=fps, min_frames=16,
                                                         size_for=lambda w, h: (256, 256))])
