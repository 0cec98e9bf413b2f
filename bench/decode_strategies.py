"""Which way of sampling 1 frame/s out of H.264 is fastest: decode all, skip non-reference frames, or seek?"""
from __future__ import annotations

import time
from pathlib import Path

import av

from bench.report import table, write_section
from bench.samples import h264_set
from indexer.decode import iter_frames


def decode_all(path: Path, nonref: bool = False) -> int:
    kept = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        if nonref:
            s.codec_context.skip_frame = "NONREF"
        next_t = 0.0
        for frame in c.decode(s):
            if frame.time is not None and frame.time + 1e-6 >= next_t:
                frame.to_ndarray(width=224, height=224, format="rgb24")
                kept += 1
                next_t = int(frame.time) + 1.0
    return kept


def seek_each_second(path: Path) -> int:
    kept = 0
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        s.thread_type = "AUTO"
        duration = float(s.duration * s.time_base)
        t = 0.0
        while t < duration:
            c.seek(int(t / s.time_base), stream=s, backward=True)
            for frame in c.decode(s):
                if frame.time is not None and frame.time + 1e-6 >= t:
                    frame.to_ndarray(width=224, height=224, format="rgb24")
                    kept += 1
                    break
            t += 1.0
    return kept


def main() -> None:
    rows = []
    for height in (360, 720):
        files = h264_set(height)
        seconds = sum(float(av.open(str(f)).streams.video[0].duration * av.open(str(f)).streams.video[0].time_base)
                      for f in files)
        for name, fn in (("decode all", lambda p: decode_all(p, nonref=False)),
                         ("decode all, skip non-ref frames", lambda p: decode_all(p, nonref=True)),
                         ("indexer.decode.iter_frames (skips non-ref)",
                          lambda p: sum(len(b.timestamps) for b in iter_frames(p, size_for=lambda w, h: (224, 224)))),
                         ("seek to each second", seek_each_second)):
            start = time.perf_counter()
            kept = sum(fn(f) for f in files)
            wall = time.perf_counter() - start
            rows.append([f"{height}p H.264", name, kept, round(seconds / wall, 1)])
    body = table(["input", "strategy", "frames kept", "video-s per wall-s"], rows)
    body += ("\n\nInputs: the sam2 clips and Big Buck Bunny (30 s) transcoded to H.264 (x264 veryfast, crf 23, "
             "default GOP) by `bench/samples.py`, 81 s in all. The engine uses threaded decoding and skips non-reference frames.")
    write_section("decode", "Sampling 1 frame/s: decode strategies", "python -m bench.decode_strategies", body)


if __name__ == "__main__":
    main()
