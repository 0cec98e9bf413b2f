"""Decoding real files of every common codec/container, VFR, odd sizes, 10-bit, rotation, and bad input."""
from __future__ import annotations

import numpy as np
import pytest

from indexer.decode import Limits, decode_all, probe, sampling_rate
from indexer.errors import InputError
from tests.clips import BIKES, BOTTLE, clip, faststart
from tests.videos import rotate_mp4, write_audio_only, write_png, write_video

CODECS = [
    ("h264.mp4", "libx264", "yuv420p"),
    ("h264.mov", "libx264", "yuv420p"),
    ("hevc.mkv", "libx265", "yuv420p"),
    ("vp8.webm", "libvpx", "yuv420p"),
    ("vp9.webm", "libvpx-vp9", "yuv420p"),
    ("av1.mkv", "libsvtav1", "yuv420p"),
    ("mpeg4.avi", "mpeg4", "yuv420p"),
    ("mjpeg.avi", "mjpeg", "yuvj420p"),
    ("h264-10bit.mkv", "libx264", "yuv420p10le"),
]


@pytest.mark.parametrize("name,codec,pix_fmt", CODECS)
def test_decodes_every_codec_and_container(tmp_path, name, codec, pix_fmt):
    path = write_video(tmp_path / name, codec=codec, pix_fmt=pix_fmt, frames=40, fps=10)
    batch = decode_all(path, fps=1.0, size_for=lambda w, h: (64, 48))
    assert batch.frames.shape[1:] == (48, 64, 3) and batch.frames.dtype == np.uint8
    # 4 s at 1 fps would give 4 frames: a short clip is sampled densely up to 8
    assert len(batch.frames) == 8
    assert np.all(np.diff(batch.timestamps) > 0)
    assert batch.frames.std() > 10  # real picture content, not a blank frame


def test_variable_frame_rate_keeps_one_frame_per_second(tmp_path):
    rng = np.random.default_rng(0)
    pts = np.cumsum(rng.uniform(0.02, 0.3, size=120))
    path = write_video(tmp_path / "vfr.mkv", frames=120, pts_seconds=list(pts - pts[0]))
    batch = decode_all(path, fps=1.0, min_frames=1)
    duration = pts[-1] - pts[0]
    assert abs(len(batch.timestamps) - np.ceil(duration)) <= 1
    gaps = np.diff(batch.timestamps)
    assert gaps.min() > 0.6 and gaps.max() < 1.4


def test_odd_size_is_scaled_to_what_the_encoder_wants(tmp_path):
    path = write_video(tmp_path / "odd.mkv", codec="libx264", size=(161, 97), pix_fmt="yuv444p")
    assert (probe(path).width, probe(path).height) == (161, 97)
    batch = decode_all(path, size_for=lambda w, h: (224, 224))
    assert batch.frames.shape[1:] == (224, 224, 3)


def test_rotation_metadata_is_honoured(tmp_path):
    plain = write_video(tmp_path / "plain.mp4", size=(96, 48), frames=10)
    rotated = rotate_mp4(plain, tmp_path / "rotated.mp4")
    upright = decode_all(plain).frames
    turned = decode_all(rotated).frames
    assert upright.shape[1:3] == (48, 96)
    assert turned.shape[1:3] == (96, 48)  # displayed as portrait
    # a clockwise quarter turn, as ffmpeg's autorotate would display it
    assert np.abs(turned[0].astype(int) - np.rot90(upright[0], k=-1).astype(int)).mean() < 3


def test_real_clip_at_one_fps():
    path = clip(BIKES)  # 10 s, 25 fps
    batch = decode_all(path, fps=1.0)
    assert len(batch.timestamps) == 10
    assert np.allclose(batch.timestamps, np.arange(10), atol=0.05)


def test_sampling_rate_for_short_and_long_clips():
    assert sampling_rate(120.0, 30.0, 1.0, 8) == 1.0
    assert sampling_rate(2.0, 30.0, 1.0, 8) == pytest.approx(4.0)
    assert sampling_rate(0.2, 10.0, 1.0, 8) == 10.0  # fewer source frames than wanted: take them all


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("make,code", [
    (lambda d: write_bytes(d / "zero.mp4", b""), "not_a_video"),
    (lambda d: write_bytes(d / "text.mp4", b"definitely not a video\n" * 50), "not_a_video"),
    (lambda d: write_png(d / "image.png"), "not_a_video"),
    (lambda d: write_audio_only(d / "audio.m4a"), "no_video_stream"),
    (lambda d: d / "missing.mp4", "not_found"),
])
def test_bad_inputs_get_one_clear_error(tmp_path, make, code):
    path = make(tmp_path)
    with pytest.raises(InputError) as err:
        decode_all(path)
    assert err.value.code == code
    assert str(path.name) in err.value.message


def test_truncated_files(tmp_path):
    data = faststart(BOTTLE, tmp_path).read_bytes()  # a prefix past the index probes, then fails to decode
    for n, name in ((3000, "head.mp4"), (200_000, "part.mp4")):
        path = tmp_path / name
        path.write_bytes(data[:n])
        with pytest.raises(InputError) as err:
            decode_all(path)
        assert err.value.code == "truncated", name


def test_limits(tmp_path):
    path = write_video(tmp_path / "v.mp4", size=(160, 96), frames=60, fps=10)  # 6 s
    with pytest.raises(InputError) as err:
        probe(path, Limits(max_duration_s=5))
    assert err.value.code == "too_long"
    with pytest.raises(InputError) as err:
        probe(path, Limits(max_bytes=100))
    assert err.value.code == "too_large"
    with pytest.raises(InputError) as err:
        probe(path, Limits(max_pixels=100 * 90))
    assert err.value.code == "bad_dimensions"


def test_empty_packets_with_a_timestamp_are_skipped_not_sent_to_the_decoder():
    """Ogg/Theora marks a dropped frame with an empty packet that has a timestamp; handed to the decoder it
    would flush it mid-stream and every later packet fails (a real Theora clip of the shared collection
    did exactly that). Real packets of a demo clip, with such empty packets between them, must decode to
    the same frames as without them."""
    import av

    from indexer.decode import _decoded

    with av.open(str(clip(BIKES))) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream)]

        class WithRepeats:
            def demux(self, _stream):
                for i, packet in enumerate(packets):
                    yield packet
                    if i % 7 == 3 and packet.pts is not None:
                        empty = av.Packet(0)
                        empty.pts = empty.dts = packet.pts + 1
                        yield empty

        frames = [f.pts for f in _decoded(WithRepeats(), stream)]
    with av.open(str(clip(BIKES))) as container:
        plain = [f.pts for f in container.decode(container.streams.video[0])]
    assert len(plain) > 100 and frames == plain
