"""Deterministic edit families: each turns an original Clip into a query Clip (+ ground truth).

All randomness comes from `rng`, seeded per (family, original), so rebuilding gives the same files.
Every query knows its copied spans (`Query.spans`): which part of the query's timeline shows which part
of the original's, in seconds. A whole-clip edit maps the whole query onto the whole original (a speed
change stretches one of the two); an excerpt, an insertion and a compilation say where.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from bench import videoedit as ve
from bench.videoedit import Clip


@dataclass
class Query:
    clip: Clip
    bitrate: int | None = None  # encode at this bitrate instead of crf
    truth: dict[str, float] = field(default_factory=dict)  # seconds: target_start/end, query_start/end
    #: copied spans, seconds: [{"query_start", "query_end", "target_start", "target_end"}]; empty means
    #: the whole query copies the whole original (filled in by `make_family`)
    spans: list[dict[str, float]] = field(default_factory=list)


def span(query_start: float, query_end: float, target_start: float, target_end: float) -> dict[str, float]:
    return {"query_start": round(query_start, 3), "query_end": round(query_end, 3),
            "target_start": round(target_start, 3), "target_end": round(target_end, 3)}


def _map(clip: Clip, fn: Callable[[np.ndarray], np.ndarray]) -> Clip:
    return ve.map_frames(clip, fn)


def _pil(fn: Callable[[Image.Image], Image.Image]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda f: np.asarray(fn(Image.fromarray(f)).convert("RGB"))


def _even(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    return frame[: h - h % 2, : w - w % 2]


def _retime(clip: Clip, speed: float) -> Clip:
    n = int(len(clip.frames) / speed)
    return Clip([clip.frames[min(len(clip.frames) - 1, int(i * speed))] for i in range(n)], clip.fps)


def _inset(background: np.ndarray, inset: np.ndarray, scale: float, rng_xy: tuple[float, float]) -> np.ndarray:
    h, w = background.shape[:2]
    small = ve.resize(inset, 1.0) if inset.shape[:2] == (h, w) else inset
    small = np.asarray(Image.fromarray(small).resize((max(2, int(w * scale)), max(2, int(h * scale)))))
    out = background.copy()
    y = int((h - small.shape[0]) * rng_xy[1])
    x = int((w - small.shape[1]) * rng_xy[0])
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def _loop(clip: Clip, n: int) -> list[np.ndarray]:
    return [clip.frames[i % len(clip.frames)] for i in range(n)]


def _resize_to(frame: np.ndarray, w: int, h: int) -> np.ndarray:
    return np.asarray(Image.fromarray(frame).resize((w, h), Image.BILINEAR))


def logo(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    img = Image.fromarray(frame).convert("RGBA")
    h, w = frame.shape[:2]
    size = int(min(h, w) * 0.22)
    layer = Image.new("RGBA", img.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    corner = rng.integers(4)
    x = 8 if corner % 2 == 0 else w - size - 8
    y = 8 if corner < 2 else h - size - 8
    draw.ellipse([x, y, x + size, y + size], fill=(255, 210, 0, 230))  # an emoji-like face
    draw.ellipse([x + size * 0.28, y + size * 0.3, x + size * 0.4, y + size * 0.45], fill=(40, 40, 40, 255))
    draw.ellipse([x + size * 0.6, y + size * 0.3, x + size * 0.72, y + size * 0.45], fill=(40, 40, 40, 255))
    draw.arc([x + size * 0.25, y + size * 0.4, x + size * 0.75, y + size * 0.8], 20, 160, fill=(40, 40, 40, 255),
             width=max(2, size // 12))
    return np.asarray(Image.alpha_composite(img, layer).convert("RGB"))


def letterbox(frame: np.ndarray, vertical: bool) -> np.ndarray:
    h, w = frame.shape[:2]
    out = np.zeros_like(frame)
    if vertical:  # letterbox: bars top and bottom
        inner = _resize_to(frame, w, int(h * 0.7))
        top = (h - inner.shape[0]) // 2
        out[top : top + inner.shape[0]] = inner
    else:  # pillarbox: bars left and right
        inner = _resize_to(frame, int(w * 0.7), h)
        left = (w - inner.shape[1]) // 2
        out[:, left : left + inner.shape[1]] = inner
    return out


def make_family(name: str, clip: Clip, rng: np.random.Generator, other: Clip) -> Query:
    """`other` is an unrelated clip (train split) for picture-in-picture, insertion and compilation.

    The query's `spans` are on the timelines of the returned query and of `clip`."""
    query = _make(name, clip, rng, other)
    if not query.spans:
        query.spans = [span(0.0, query.clip.duration, 0.0, clip.duration)]
    return query


def _make(name: str, clip: Clip, rng: np.random.Generator, other: Clip) -> Query:
    if name == "reencode_lowbitrate":
        return Query(clip, bitrate=120_000)
    if name == "downscale_0.5":
        return Query(_map(clip, lambda f: ve.resize(f, 0.5)))
    if name == "crop_10":
        return Query(_map(clip, lambda f: _even(ve.crop(f, 0.10))))
    if name == "crop_25":
        return Query(_map(clip, lambda f: _even(ve.crop(f, 0.25))))
    if name == "hflip":
        return Query(_map(clip, ve.hflip))
    if name == "blur":
        return Query(_map(clip, _pil(lambda im: im.filter(ImageFilter.GaussianBlur(3)))))
    if name == "color":
        b, c, s = rng.uniform(1.2, 1.4), rng.uniform(0.6, 0.8), rng.uniform(1.4, 1.8)
        return Query(_map(clip, _pil(lambda im: ImageEnhance.Color(ImageEnhance.Contrast(
            ImageEnhance.Brightness(im).enhance(b)).enhance(c)).enhance(s))))
    if name == "grayscale":
        return Query(_map(clip, _pil(lambda im: im.convert("L"))))
    if name == "text_overlay":
        return Query(_map(clip, ve.text_overlay))
    if name == "logo_overlay":
        seed = int(rng.integers(1 << 30))
        return Query(_map(clip, lambda f: logo(f, np.random.default_rng(seed))))
    if name == "letterbox":
        vertical = bool(rng.integers(2))
        return Query(_map(clip, lambda f: letterbox(f, vertical)))
    if name == "pip":  # the original shrunk into another clip
        xy = (float(rng.random()), float(rng.random()))
        h, w = clip.frames[0].shape[:2]
        frames = [_inset(_resize_to(bg, w, h), fg, 0.5, xy) for bg, fg in zip(_loop(other, len(clip.frames)), clip.frames)]
        return Query(Clip(frames, clip.fps))
    if name == "reverse_pip":  # another clip inside the original
        xy = (float(rng.random()), float(rng.random()))
        frames = [_inset(fg, inset, 0.35, xy) for fg, inset in zip(clip.frames, _loop(other, len(clip.frames)))]
        return Query(Clip(frames, clip.fps))
    if name == "speed_0.75":
        return Query(_retime(clip, 0.75))
    if name == "speed_1.5":
        return Query(_retime(clip, 1.5))
    if name == "framerate":
        step = 2
        return Query(Clip(clip.frames[::step], clip.fps / step))
    if name == "excerpt":
        frac = rng.uniform(0.3, 0.5)
        n = len(clip.frames)
        length = max(2, int(n * frac))
        start = int(rng.integers(0, max(1, n - length)))
        return Query(Clip(clip.frames[start : start + length], clip.fps),
                     truth={"target_start": start / clip.fps, "target_end": (start + length) / clip.fps},
                     spans=[span(0.0, length / clip.fps, start / clip.fps, (start + length) / clip.fps)])
    if name == "insertion":  # the original in the middle of a longer unrelated video
        h, w = clip.frames[0].shape[:2]
        pad = [_resize_to(f, w, h) for f in _loop(other, int(clip.fps * 20))]
        cut = len(pad) // 2
        frames = pad[:cut] + clip.frames + pad[cut:]
        return Query(Clip(frames, clip.fps),
                     truth={"query_start": cut / clip.fps, "query_end": (cut + len(clip.frames)) / clip.fps},
                     spans=[span(cut / clip.fps, (cut + len(clip.frames)) / clip.fps, 0.0, clip.duration)])
    if name == "compilation":  # two excerpts in swapped order with 4 s of unrelated video between them
        n, fps = len(clip.frames), clip.fps
        length_a, length_b = (max(1, int(n * rng.uniform(0.25, 0.35))) for _ in range(2))
        start_a = int(rng.integers(0, max(1, n // 2 - length_a + 1)))
        start_b = int(rng.integers(max(start_a + length_a, n // 2), max(start_a + length_a, n - length_b) + 1))
        length_b = min(length_b, n - start_b)
        h, w = clip.frames[0].shape[:2]
        gap = [_resize_to(f, w, h) for f in _loop(other, int(fps * 4))]
        frames = clip.frames[start_b : start_b + length_b] + gap + clip.frames[start_a : start_a + length_a]
        a_at = (length_b + len(gap)) / fps
        return Query(Clip(frames, fps), spans=[
            span(0.0, length_b / fps, start_b / fps, (start_b + length_b) / fps),
            span(a_at, a_at + length_a / fps, start_a / fps, (start_a + length_a) / fps)])
    if name == "hard":
        picks = rng.choice(["crop_25", "hflip", "text_overlay", "color", "blur", "speed_1.5", "logo_overlay"],
                           size=3, replace=False)
        out = Query(clip)
        for pick in sorted(picks):
            out = _make(str(pick), out.clip, rng, other)
        return Query(out.clip, out.bitrate)  # whole-clip edits: the default span (a speed-up stretches it)
    raise ValueError(f"unknown family {name}")


FAMILIES = ["reencode_lowbitrate", "downscale_0.5", "crop_10", "crop_25", "hflip", "blur", "color", "grayscale",
            "text_overlay", "logo_overlay", "letterbox", "pip", "reverse_pip", "speed_0.75", "speed_1.5",
            "framerate", "excerpt", "insertion", "hard"]
#: families with several copied spans per query, scored by the segment benchmark (bench.copies.segments);
#: the retrieval table keeps FAMILIES so that its numbers stay comparable from run to run
MULTI_SPAN_FAMILIES = ["compilation"]
