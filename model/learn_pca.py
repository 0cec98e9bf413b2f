"""Learn the PCA-whitening file of an encoder from frames of real videos.

The paper's PCA was learnt on 1M VCDB frames; ours is learnt on the clips we
may use (``../shared/videos``), sampled densely and with horizontal flips so
that the covariance of the D-dim region descriptors is well estimated
(D = 1776 for Lite0; ~80k region vectors by default).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from model.encoder import FrameEncoder
from model.pca import learn_pca, save_pca

log = logging.getLogger(__name__)


def collect_regions(encoder: FrameEncoder, frame_batches: Iterable[np.ndarray], flip: bool = True) -> np.ndarray:
    """Pre-PCA region descriptors (M x C) of every frame, plus their mirror images."""
    chunks: list[np.ndarray] = []
    for frames in frame_batches:
        views = [frames, frames[:, :, ::-1]] if flip else [frames]
        for view in views:
            chunks.append(encoder.raw_regions(np.ascontiguousarray(view)).reshape(-1, encoder.channels).numpy())
    if not chunks:
        raise ValueError("no frames to learn a PCA from")
    return np.concatenate(chunks)


def learn_and_save(encoder: FrameEncoder, frame_batches: Iterable[np.ndarray], out: Path, dims: int = 512) -> int:
    """Returns the number of region vectors the PCA was learnt from."""
    regions = collect_regions(encoder, frame_batches)
    if len(regions) < 2 * encoder.channels:
        log.warning("only %d region vectors for a %d-d covariance: whitening will be noisy",
                    len(regions), encoder.channels)
    params = learn_pca(regions, dims=dims)
    save_pca(params, out, backbone=encoder.config.backbone, samples=str(len(regions)))
    return len(regions)
