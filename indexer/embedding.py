"""Decoding and embedding one video (no store involved): probe, decode in the background at the sampling
rate, encode in batches, apply the network's index_video, drop blank frames, collect key frames on the way.
Indexing (indexer/ingest.py) and queries (indexer/search.py) both start here."""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from config.settings import Settings
from indexer import failpoints
from indexer.decode import VideoInfo, iter_frames, probe
from indexer.keyframes import KeyframeCollector
from indexer.models import Models
from indexer.prefetch import Prefetch
from indexer.store import VideoRecord
from model.preprocess import informative_frames

#: progress(stage, fraction in [0, 1]); stages: decoding, embedding, indexing
Progress = Callable[[str, float], None]


@dataclass
class Embedded:
    """A decoded and embedded video, before or instead of indexing."""

    features: torch.Tensor  # T x 9 x 512 float32 (fp16 with keep_fp16), after the network's index_video
    timestamps: np.ndarray  # seconds
    mirrored: torch.Tensor | None  # the same for horizontally mirrored frames (queries only)
    info: VideoInfo
    timings_ms: dict[str, float] = field(default_factory=dict)
    #: every sampled frame was blank (model.preprocess.informative_frames); the features are then all of
    #: them, so that the video still has a record, but a query with it has no evidence to search with
    blank: bool = False


@dataclass
class Decoding:
    """A file being decoded in the background, ready to be embedded (`Engine.start_decoding`)."""

    path: Path
    info: VideoInfo
    sha256: str | None  # known when indexing (idempotence); queries never hash
    batches: Prefetch
    replaces: VideoRecord | None = None  # the entry with the same sha256 that a forced re-index replaces
    probe_ms: float = 0.0


class Embedder:
    def __init__(self, settings: Settings, models: Models):
        self.settings, self.models = settings, models

    def start_decoding(self, path: str | Path, sha256: str | None = None,
                       replaces: VideoRecord | None = None) -> Decoding:
        """Probe `path`, then start decoding it in the background (raises InputError at once)."""
        path = Path(path)
        t0 = time.perf_counter()
        info = probe(path, self.settings.limits())  # bad input fails here, before any model is loaded
        probe_ms = (time.perf_counter() - t0) * 1000  # not counting the encoder's one-off load just below
        frames = iter_frames(path, fps=self.settings.sample_fps, size_for=self.models.encoder.decode_size,
                             batch_size=self.settings.encode_batch, min_frames=self.settings.min_frames,
                             limits=self.settings.limits(), info=info)
        return Decoding(path, info, sha256, Prefetch(frames), replaces, probe_ms)

    def embed(self, path: str | Path, progress: Progress | None = None, mirrored: bool = False,
              decoding: Decoding | None = None, keep_fp16: bool = False,
              keyframes: KeyframeCollector | None = None) -> Embedded:
        """Decode at the sampling rate, encode in batches, apply index_video. Memory stays flat.

        With `mirrored`, the horizontally flipped frames are embedded too (for
        queries). `decoding` is a file whose decoding was started earlier (by
        `start_decoding`); without it, decoding starts now. `keep_fp16` returns
        the features as stored (fp16), sparing an hour-long video a 66 MB float32 copy. `keyframes`
        collects small JPEGs of the sampled frames on the way (indexer/keyframes.py).
        """
        decoding = decoding or self.start_decoding(path)
        info = decoding.info
        parts: list[torch.Tensor] = []
        flipped: list[torch.Tensor] = []
        stamps: list[np.ndarray] = []
        informative: list[np.ndarray] = []
        decode_s = encode_s = 0.0
        t_dec = time.perf_counter()
        for batch in decoding.batches:
            failpoints.reach("decode")  # frames decoded, none embedded
            t_enc = time.perf_counter()
            decode_s += t_enc - t_dec
            encode = self.models.encode
            with torch.inference_mode():
                parts.append(self.models.network.index_video(encode(batch.frames)).to(torch.float16).cpu())
                if mirrored:
                    frames = np.ascontiguousarray(batch.frames[:, :, ::-1])
                    flipped.append(self.models.network.index_video(encode(frames)).to(torch.float16).cpu())
            stamps.append(batch.timestamps)
            informative.append(informative_frames(batch.frames, self.settings.blank_frame_std))
            if keyframes is not None:
                keyframes.add(batch.frames, batch.timestamps, informative[-1], batch.rotation)
            failpoints.reach("embed")  # a batch embedded, the video not finished
            t_dec = time.perf_counter()
            encode_s += t_dec - t_enc
            if progress and info.duration > 0:
                progress("embedding", min(1.0, float(batch.timestamps[-1]) / info.duration))
        features, timestamps = torch.cat(parts), np.concatenate(stamps)
        mirror = torch.cat(flipped) if flipped else None
        keep = np.concatenate(informative)
        blank = not keep.any()
        if not blank and not keep.all():
            # blank frames are no evidence: neither stored nor searched with (the timestamps keep the rest
            # where they are on the video's timeline, so segments are unchanged)
            index = torch.from_numpy(np.flatnonzero(keep))
            features, timestamps = features[index], timestamps[keep]
            mirror = mirror[index] if mirror is not None else None
        features = features if keep_fp16 else features.float()
        mirror = mirror.float() if mirror is not None else None
        timings = {"probe_hash": decoding.probe_ms, "decode": decode_s * 1000, "embed": encode_s * 1000}
        return Embedded(features, timestamps, mirror, info, timings, blank=blank)
