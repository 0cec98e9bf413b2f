"""Frame geometry and normalisation shared by every backbone.

Two resize modes:
* ``squash`` (default): the whole frame is resized to size x size, aspect
  ignored. Nothing is cut, so borders, corner logos and picture-in-picture
  content stay visible to the encoder; copies cropped or letterboxed change
  the aspect the same way for query and target.
* ``crop``: the paper's protocol, short side to 256/224*size, centre crop.
  It drops ~12% of each long side of a 16:9 frame.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

RESIZE_MODES = ("squash", "crop")


def resize_target(width: int, height: int, size: int, mode: str) -> tuple[int, int]:
    """The (w, h) a decoder should scale a width x height frame to before `center_crop`."""
    if mode == "squash":
        return size, size
    if mode == "crop":
        short = round(size * 256 / 224)
        if width <= height:
            return short, max(short, round(height * short / width))
        return max(short, round(width * short / height)), short
    raise ValueError(f"unknown resize mode {mode!r}; use one of {RESIZE_MODES}")


def center_crop(frames: np.ndarray, size: int) -> np.ndarray:
    """Centre crop N x H x W x 3 to size x size (no-op when already that size)."""
    h, w = frames.shape[1:3]
    if h == size and w == size:
        return frames
    top, left = (h - size) // 2, (w - size) // 2
    return frames[:, top : top + size, left : left + size]


def fit_frames(frames: np.ndarray, size: int, mode: str) -> np.ndarray:
    """Any N x H x W x 3 uint8 frames -> N x size x size x 3 uint8 by the given mode."""
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be N x H x W x 3, got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 RGB, got {frames.dtype}")
    h, w = frames.shape[1:3]
    tw, th = resize_target(w, h, size, mode)
    if (tw, th) != (w, h):
        t = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
        t = F.interpolate(t, size=(th, tw), mode="bilinear", antialias=True, align_corners=False)
        frames = t.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(center_crop(frames, size))


#: ITU-R BT.601 luma weights
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def informative_frames(frames: np.ndarray, min_luma_std: float) -> np.ndarray:
    """N x H x W x 3 uint8 RGB -> N bools: frames whose luma varies by at least `min_luma_std` (0-255).

    A frame without spatial variation (black, white or grey, the flat middle of a fade, codec noise on
    black) shows nothing, yet its regional features are far from random: every black frame embeds
    alike, so two unrelated videos with black stretches look like copies of each other. Such frames are
    no evidence of copying and are left out of the index and the query (docs/MODEL.md, "Blank frames").
    Uniform to within a luma standard deviation of 5 is darker and flatter than any real scene in the
    benchmark collection (its least varied frame of content, a night street, has 9.5).
    """
    if min_luma_std <= 0 or len(frames) == 0:
        return np.ones(len(frames), dtype=bool)
    luma = frames.reshape(len(frames), -1, 3).astype(np.float32) @ _LUMA
    return luma.std(axis=1) >= min_luma_std
