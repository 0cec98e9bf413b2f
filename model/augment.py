"""The self-supervised views of S2VS/HAP-VR (method doc §1.6), split by where they are applied.

Pixel-level (applied once per cached view, on decoded frames, the same draw for every frame of a
view as in the official video transforms):
  * weak: RandomResizedCrop(scale 0.8-1), horizontal flip;
  * strong: RandomResizedCrop(scale 0.5-1), flip, two RandAugment-style colour/geometry ops,
    text overlay (p=0.3), emoji overlay (p=0.3), Gaussian blur (p=0.5, sigma 0.1-2).
Feature-level (applied to cached features at every step, exact because they only re-index frames):
  * temporal: shuffle-dropout (p=0.5; segments of 4-15 frames shuffled with p=0.5, each dropped with
    p=0.3, half of the dropped replaced by black or noise frames), fast-forward x2-3, slow motion x2,
    reverse, pause (up to W/4 frames), none (p=0.1 each);
  * video-in-video (p=0.3): approximated on the 3x3 region grid, see `video_in_video`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from model.train_config import PAPER_VIV_AREA  # the ViV inset area lives with the training configuration


def _resized_crop(rng: np.random.Generator, w: int, h: int, scale: tuple[float, float]) -> tuple[int, int, int, int]:
    area = w * h
    for _ in range(10):
        target = area * rng.uniform(*scale)
        ratio = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        cw, ch = int(round(np.sqrt(target * ratio))), int(round(np.sqrt(target / ratio)))
        if 0 < cw <= w and 0 < ch <= h:
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return x, y, x + cw, y + ch
    return 0, 0, w, h


def _rand_augment(rng: np.random.Generator, ops: int = 2, magnitude: int = 9):
    m = magnitude / 30.0
    choices = [
        lambda im: ImageEnhance.Brightness(im).enhance(1 + m * rng.choice([-1, 1])),
        lambda im: ImageEnhance.Contrast(im).enhance(1 + m * rng.choice([-1, 1])),
        lambda im: ImageEnhance.Color(im).enhance(1 + m * rng.choice([-1, 1])),
        lambda im: ImageEnhance.Sharpness(im).enhance(1 + m * rng.choice([-1, 1])),
        lambda im: ImageOps.posterize(im, 8 - int(m * 4)),
        lambda im: ImageOps.solarize(im, 256 - int(m * 256)),
        lambda im: ImageOps.autocontrast(im),
        lambda im: ImageOps.equalize(im),
        lambda im: im.rotate(30 * m * rng.choice([-1, 1])),
    ]
    picks = rng.choice(len(choices), size=ops, replace=False)
    fns = [choices[i] for i in picks]
    return lambda im: _chain(im, fns)


def _chain(im: Image.Image, fns) -> Image.Image:
    for fn in fns:
        im = fn(im)
    return im


def _text(rng: np.random.Generator):
    words = ["BREAKING", "LIVE", "EXCLUSIVE", "viral", "watch", "#trending", "2024", "UPDATE", "wow"]
    text = " ".join(rng.choice(words, size=int(rng.integers(1, 4))))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    pos = (float(rng.uniform(0, 0.6)), float(rng.uniform(0, 0.85)))
    size = float(rng.uniform(0.06, 0.15))

    def apply(im: Image.Image) -> Image.Image:
        draw = ImageDraw.Draw(im)
        try:
            font = ImageFont.load_default(size=max(8, int(im.height * size)))
        except TypeError:
            font = ImageFont.load_default()
        draw.text((im.width * pos[0], im.height * pos[1]), text, fill=color, font=font)
        return im

    return apply


def _emoji(rng: np.random.Generator):
    size, x, y = float(rng.uniform(0.1, 0.3)), float(rng.uniform(0, 0.8)), float(rng.uniform(0, 0.8))
    color = tuple(int(c) for c in rng.integers(0, 256, 3))

    def apply(im: Image.Image) -> Image.Image:
        draw = ImageDraw.Draw(im)
        s = int(min(im.size) * size)
        x0, y0 = int(im.width * x), int(im.height * y)
        draw.ellipse([x0, y0, x0 + s, y0 + s], fill=color)
        draw.ellipse([x0 + s * 0.25, y0 + s * 0.3, x0 + s * 0.4, y0 + s * 0.45], fill=(0, 0, 0))
        draw.ellipse([x0 + s * 0.6, y0 + s * 0.3, x0 + s * 0.75, y0 + s * 0.45], fill=(0, 0, 0))
        return im

    return apply


def pixel_view(frames: np.ndarray, rng: np.random.Generator, strong: bool, size: int = 224) -> np.ndarray:
    """One augmented view of a clip (N x H x W x 3 uint8) -> N x size x size x 3; one draw for all frames."""
    h, w = frames.shape[1:3]
    box = _resized_crop(rng, w, h, (0.5, 1.0) if strong else (0.8, 1.0))
    flip = rng.random() < 0.5
    ops = []
    if strong:
        ops.append(_rand_augment(rng))
        if rng.random() < 0.3:
            ops.append(_text(rng))
        if rng.random() < 0.3:
            ops.append(_emoji(rng))
        if rng.random() < 0.5:
            radius = float(rng.uniform(0.1, 2.0))
            ops.append(lambda im: im.filter(ImageFilter.GaussianBlur(radius)))
    out = np.empty((len(frames), size, size, 3), np.uint8)
    for i, frame in enumerate(frames):
        im = Image.fromarray(frame).crop(box).resize((size, size), Image.BILINEAR)
        if flip:
            im = ImageOps.mirror(im)
        for op in ops:
            im = op(im)
        out[i] = np.asarray(im.convert("RGB"))
    return out




def pixel_video_in_video(host: np.ndarray, inset: np.ndarray, rng: np.random.Generator,
                         area: tuple[float, float] = PAPER_VIV_AREA) -> np.ndarray:
    """The paper's ViV on pixels: every host frame (N x S x S x 3) gets the inset clip's frame at the same
    index (looped) shrunk to an area of 1 - lambda, drawn uniformly within `area`, at one random position."""
    size = host.shape[1]
    lam = rng.uniform(1.0 - area[1], 1.0 - area[0])
    side = max(8, int(round(size * np.sqrt(1 - lam))))
    top, left = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
    out = host.copy()
    for t in range(len(host)):
        small = Image.fromarray(inset[t % len(inset)]).resize((side, side), Image.BILINEAR)
        out[t, top : top + side, left : left + side] = np.asarray(small)
    return out


# ----- temporal transforms on cached features (index maps; -1 = black frame, -2 = noise frame)

def temporal_indices(n: int, window: int, rng: np.random.Generator) -> np.ndarray:
    """Frame indices into a 2W-frame window (length n) for the strong view, then a W-frame crop."""
    idx = np.arange(n)
    r = rng.random()
    if r < 0.5:  # shuffle-dropout
        cuts, pos = [], 0
        while pos < n:
            step = int(rng.integers(4, 16))
            cuts.append(idx[pos : pos + step])
            pos += step
        if rng.random() < 0.5:
            rng.shuffle(cuts)
        kept = []
        for seg in cuts:
            if rng.random() < 0.3:
                if rng.random() < 0.5:
                    kept.append(np.full(len(seg), -1 if rng.random() < 0.5 else -2))
            else:
                kept.append(seg)
        idx = np.concatenate(kept) if kept else idx
    elif r < 0.6:  # fast-forward
        idx = idx[:: int(rng.integers(2, 4))]
    elif r < 0.7:  # slow motion
        idx = np.repeat(idx, 2)
    elif r < 0.8:  # reverse
        idx = idx[::-1]
    elif r < 0.9:  # pause
        at, length = int(rng.integers(0, n)), int(rng.integers(1, max(2, window // 4 + 1)))
        idx = np.concatenate([idx[:at], np.full(length, idx[at]), idx[at:]])
    while len(idx) < window:
        idx = np.concatenate([idx, idx])
    start = int(rng.integers(0, len(idx) - window + 1))
    return idx[start : start + window]


def gather(features: torch.Tensor, idx: np.ndarray, black: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """T x R x D features re-indexed by `idx`, with -1 / -2 replaced by black / noise frame features."""
    out = features[np.clip(idx, 0, None)].clone()
    out[torch.from_numpy(idx == -1)] = black
    out[torch.from_numpy(idx == -2)] = noise
    return out


def video_in_video(host: torch.Tensor, inset: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Approximate ViV on the 3x3 region grid, used only when a cache has no pixel ViV views
    (`--viv-views 0`; see `pixel_video_in_video` and `model/train.py:build_cache`): a box of grid
    cells covering about 1 - lambda of the frame (lambda ~ U(0.3, 0.7)) takes the inset clip's frame
    descriptor (the whole inset frame seen small inside those cells). Pixel-exact ViV would need a
    re-encode per batch; this keeps training on cached features."""
    lam = rng.uniform(0.3, 0.7)
    cells = max(1, int(round((1 - lam) * 9)))
    shapes = [(r, c) for r in (1, 2, 3) for c in (1, 2, 3) if abs(r * c - cells) <= 1] or [(2, 2)]
    rows, cols = shapes[int(rng.integers(len(shapes)))]
    top, left = int(rng.integers(0, 4 - rows)), int(rng.integers(0, 4 - cols))
    grid = [r * 3 + c for r in range(top, top + rows) for c in range(left, left + cols)]
    out = host.clone()
    inset_frames = F.normalize(inset.mean(1), dim=-1)  # T x D
    out[:, grid] = inset_frames[:, None, :]
    return out
