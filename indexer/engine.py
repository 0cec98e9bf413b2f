"""The engine: the one place that turns files into indexed videos and queries into ranked results.

The CLI (`indexer/cli.py`) and the HTTP service (`service/`) both drive this
class; neither decodes, embeds or searches on its own.
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from indexer import confidence as conf
from indexer import duplicates as dup
from indexer import failpoints
from indexer.backends import open_store, open_vectors
from indexer.coarse import frame_descriptors
from indexer.contracts import VectorIndex
from indexer.decode import VideoInfo, iter_frames, probe
from indexer.errors import InputError
from indexer.explain import matrix_view
from indexer.keyframes import KeyframeCollector, Keyframes
from indexer.prefetch import Prefetch
from indexer.segments import align
from config.settings import Settings, get_settings
from indexer.store import Store, VideoRecord
from model.checkpoint import load_similarity
from model.encoder import FrameEncoder, encoder_version, feature_space
from model.pca import file_digest
from model.preprocess import informative_frames
from model.similarity import HAPVRSimilarity

log = logging.getLogger(__name__)

SHIPPED_CHECKPOINT = Path(__file__).resolve().parents[1] / "model" / "assets" / "hapvr_sim.pt"
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


@dataclass
class IndexOutcome:
    record: VideoRecord
    created: bool  # False: the same file (sha256) was already indexed
    timings_ms: dict[str, float] = field(default_factory=dict)


@functools.cache
def bf16_matmul_is_faster() -> bool:
    """Whether bf16 region dot products beat float32 on this CPU, measured once per process (~0.1 s).

    CPU flags are not a reliable guide: on one AMD EPYC VM of our benchmarks,
    /proc/cpuinfo listed no avx512_bf16, yet oneDNN's bf16 GEMM took 106 ms
    against 281 ms in float32 for a 60-frame query's regions against 100
    60-frame candidates (other VMs list the flag). The probe has the query's
    side of that product and 4,096 target regions.
    """
    q32, t32 = torch.randn(540, 512), torch.randn(512, 4096)
    timings = {}
    for dtype in (torch.float32, torch.bfloat16):
        q, t = q32.to(dtype), t32.to(dtype)
        q @ t  # warm-up: oneDNN picks its kernel
        start = time.perf_counter()
        for _ in range(3):
            q @ t
        timings[dtype] = time.perf_counter() - start
    return timings[torch.bfloat16] < 0.8 * timings[torch.float32]


def _log_unexpected(path: Path, exc: Exception) -> None:
    if not isinstance(exc, InputError):  # bad input is the caller's to report; anything else is a bug
        log.error("unexpected error on %s", path, exc_info=exc)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Engine:
    """Thread-safe for queries; index writes serialise on the store's cross-process lock."""

    #: videos whose key frames stay in memory (about 0.3 MB each at the default 120 key frames)
    KEYFRAME_CACHE = 32
    #: the `note` of a query whose every frame is blank: no results, and why
    BLANK_QUERY = "every sampled frame of the query is blank (black, a fade or flat colour): no evidence to match"

    def __init__(self, settings: Settings | None = None, data: str | Path | None = None):
        self.settings = settings or get_settings()
        self.data = Path(data) if data is not None else self.settings.data
        self.device = torch.device(self.settings.torch_device())
        self._lock = threading.RLock()
        self._last_save = time.monotonic()
        #: the key frames of the videos a front end looked at last (a page reads many frames of few videos)
        self._keyframes: OrderedDict[str, Keyframes] = OrderedDict()
        failpoints.arm(self.settings.failpoints)
        #: replaced by a FrameBatcher when several jobs embed concurrently (service workers)
        self.batcher = None

    # ----- models (loaded on first use, once per process)
    @cached_property
    def encoder(self) -> FrameEncoder:
        s = self.settings
        t0 = time.perf_counter()
        encoder = FrameEncoder(s.encoder_config(), device=self.device, cache_dir=s.cache_dir, batch_size=s.encode_batch)
        log.info("frame encoder (%s, %s) loaded in %.0f ms", encoder.runtime, self.device,
                 (time.perf_counter() - t0) * 1000)
        return encoder

    @cached_property
    def features_version(self) -> str:
        """This engine's encoder version (model.encoder.encoder_version), computed once: it hashes the PCA
        and int8 range files."""
        return encoder_version(self.settings.encoder_config())

    @cached_property
    def _checkpoint(self) -> tuple[Path, HAPVRSimilarity] | None:
        """The checkpoint the engine scores with and its network (read once, on the CPU), or None for the
        untrained similarity. The shipped network was trained on the default encoder's features; with
        another encoder (a frame size or backbone the user chose) it would mis-score, so the default falls
        back to the training-free similarity there, while a checkpoint asked for by name fails loudly."""
        if not self.settings.use_checkpoint:
            return None
        named = self.settings.checkpoint is not None
        path = Path(self.settings.checkpoint) if named else SHIPPED_CHECKPOINT
        if not path.is_file():
            if named:
                raise FileNotFoundError(f"checkpoint {path} not found")
            return None
        net, meta = load_similarity(path)
        expected = (meta or {}).get("encoder_version")
        if not self._fits_encoder(expected):
            if named:
                raise InputError("incompatible_store", f"checkpoint {path} was trained on {expected} features, "
                                 f"the encoder is {self.features_version}")
            log.warning("the shipped checkpoint expects %s features, the encoder is %s: using the untrained "
                        "Chamfer similarity", expected, self.features_version)
            return None
        return path, net

    @property
    def checkpoint_path(self) -> Path | None:
        return self._checkpoint[0] if self._checkpoint else None

    def _fits_encoder(self, checkpoint_encoder: str | None) -> bool:
        """Whether a checkpoint trained on `checkpoint_encoder` features (unknown for official files) can
        score this engine's features."""
        return not checkpoint_encoder or feature_space(checkpoint_encoder) == feature_space(self.features_version)

    @cached_property
    def network(self) -> HAPVRSimilarity:
        s = self.settings
        if self._checkpoint is None:
            net = HAPVRSimilarity(learned=False, f2f_topk_rate=s.f2f_topk_rate, v2v_topk_rate=s.v2v_topk_rate)
        else:
            net = self._checkpoint[1]
            if s.chamfer_mix is not None:
                net.chamfer_mix = s.chamfer_mix
            if s.comparator is not None:
                net.comparator = s.comparator
        net.compute_dtype = self._rerank_dtype()
        return net.to(self.device).eval()

    def _rerank_dtype(self) -> torch.dtype:
        choice = self.settings.rerank_precision
        if choice == "auto":
            return torch.bfloat16 if self.device.type == "cpu" and bf16_matmul_is_faster() else torch.float32
        return {"float32": torch.float32, "bfloat16": torch.bfloat16}[choice]

    @cached_property
    def model_version(self) -> str:
        """Encoder features + similarity network: what the stored features depend on."""
        return f"{self.features_version}+{self._similarity_version}"

    @property
    def _similarity_version(self) -> str:
        return f"sim:{file_digest(self.checkpoint_path)}" if self.checkpoint_path else "sim:chamfer"

    @cached_property
    def scoring_model(self) -> str:
        """The model version without the encoder's precision: int8 approximates the fp32 features, so one
        confidence calibration serves both (a new checkpoint, PCA, frame size or backbone changes it)."""
        return f"{feature_space(self.features_version)}+{self._similarity_version}"

    @cached_property
    def calibration(self) -> conf.Calibration | None:
        """The confidence map fitted for this engine's scoring model (indexer/confidence.py), or None."""
        return conf.load_for(self.scoring_model, self.settings.confidence_map)

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings, self.data, self.model_version)

    @cached_property
    def coarse(self) -> VectorIndex:
        return open_vectors(self.settings, self.store)

    # ----- embedding
    def start_decoding(self, path: str | Path, sha256: str | None = None,
                       replaces: VideoRecord | None = None) -> Decoding:
        """Probe `path`, then start decoding it in the background (raises InputError at once)."""
        path = Path(path)
        t0 = time.perf_counter()
        info = probe(path, self.settings.limits())  # bad input fails here, before any model is loaded
        probe_ms = (time.perf_counter() - t0) * 1000  # not counting the encoder's one-off load just below
        frames = iter_frames(path, fps=self.settings.sample_fps, size_for=self.encoder.decode_size,
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
            encode = self.batcher.encode if self.batcher is not None else self.encoder.encode
            with torch.inference_mode():
                parts.append(self.network.index_video(encode(batch.frames)).to(torch.float16).cpu())
                if mirrored:
                    frames = np.ascontiguousarray(batch.frames[:, :, ::-1])
                    flipped.append(self.network.index_video(encode(frames)).to(torch.float16).cpu())
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

    # ----- indexing
    def prepare(self, path: str | Path, force: bool = False) -> IndexOutcome | Decoding:
        """The outcome when the same file (sha256) is already indexed and not `force`d; else its decoding, started."""
        path = Path(path)
        if not path.is_file():
            raise InputError("not_found", f"{path}: no such file")
        sha = sha256_file(path)
        existing = self.store.by_sha256(sha)
        if existing and not force:
            return IndexOutcome(existing, created=False)
        return self.start_decoding(path, sha256=sha, replaces=existing)

    def index(self, path: str | Path, external_id: str | None = None, metadata: dict | None = None,
              force: bool = False, progress: Progress | None = None, keep_source: bool = False) -> IndexOutcome:
        """Index one file. Idempotent by sha256 unless `force` (then the old entry is replaced).

        `keep_source`: the file (an upload) is also stored in the media store once its video commits, so
        front ends can play it (a hard link where the media store is on the same disk).
        """
        planned = self.prepare(path, force)
        if isinstance(planned, IndexOutcome):
            return planned
        return self._index_decoding(planned, external_id, metadata, force, progress, keep_source)

    def index_many(self, paths: Iterable[str | Path], metadata: dict | None = None,
                   force: bool = False) -> Iterator[tuple[Path, IndexOutcome | Exception]]:
        """Index files in order, yielding each one's outcome or error; a bad file never stops the rest.

        The next file is probed, hashed and decoding before the current one is
        embedded, so the cores stay busy across file boundaries (see
        `indexer/prefetch.py`). At most two files are in flight.
        """
        paths = [Path(p) for p in paths]

        def prepare(i: int) -> IndexOutcome | Decoding | Exception | None:
            if i >= len(paths):
                return None
            try:
                return self.prepare(paths[i], force)
            except Exception as exc:  # noqa: BLE001 - reported for this file, the batch goes on
                _log_unexpected(paths[i], exc)
                return exc

        ahead = prepare(0)
        try:
            for i, path in enumerate(paths):
                current, ahead = ahead, prepare(i + 1)
                if isinstance(current, Decoding):
                    try:
                        current = self._index_decoding(current, None, metadata, force, None)
                    except Exception as exc:  # noqa: BLE001 - reported for this file, the batch goes on
                        _log_unexpected(path, exc)
                        current = exc
                yield path, current
        finally:
            if isinstance(ahead, Decoding):
                ahead.batches.close()

    def _index_decoding(self, decoding: Decoding, external_id: str | None, metadata: dict | None, force: bool,
                        progress: Progress | None, keep_source: bool = False) -> IndexOutcome:
        keyframes = None
        if self.settings.keyframes > 0:
            expected = max(1, round(decoding.info.duration * self.settings.sample_fps), self.settings.min_frames)
            info = decoding.info
            aspect = info.width / info.height if self.settings.resize_mode == "squash" and info.height else None
            keyframes = KeyframeCollector(expected, self.settings.keyframes, self.settings.keyframe_height,
                                          aspect=aspect)
        emb = self.embed(decoding.path, progress, decoding=decoding, keep_fp16=True, keyframes=keyframes)
        if progress:
            progress("indexing", 0.0)
        t0 = time.perf_counter()
        video_id = self.store.write_features(emb.features.numpy())
        if keyframes is not None:  # beside the features, before the row: an orphan at worst, removed with them
            self.store.media.put(video_id, "keyframes.zip", keyframes.pack())
        failpoints.reach("commit")  # the feature file is written, no row names it yet
        with self.store.write_lock():
            again = self.store.by_sha256(decoding.sha256)
            if again and not force:  # another writer won the race
                self.store.discard_features(video_id)
                return IndexOutcome(again, created=False)
            info = emb.info
            record = self.store.commit_video(
                video_id, source=external_id or str(decoding.path), external_id=external_id, sha256=decoding.sha256,
                duration=info.duration, fps=info.fps, width=info.width, height=info.height, codec=info.codec,
                timestamps=emb.timestamps, metadata=metadata,
            )
        if force:  # the entries this one replaces
            for old in {r.id for r in (decoding.replaces, again) if r is not None} - {record.id}:
                self.store.delete(old)
        if keep_source:
            try:
                self.store.media.put_file(record.id, "source", decoding.path)
            except Exception as exc:  # noqa: BLE001 - the video is indexed; only its player is missing
                log.warning("video %s: the source file was not kept (%s)", record.id, exc)
        with self._lock:
            self.coarse.sync()
            if time.monotonic() - self._last_save > 60:
                try:
                    self.save()
                except OSError as exc:  # a full disk: the video is committed; the index is derived, saved later
                    log.error("could not save the coarse index (%s); it is rebuilt from the store if need be", exc)
                    self._last_save = time.monotonic()
        timings = dict(emb.timings_ms, store=(time.perf_counter() - t0) * 1000)
        if progress:
            progress("indexing", 1.0)
        return IndexOutcome(record, created=True, timings_ms=timings)

    def warm_up(self) -> None:
        """Load the encoder, the similarity network and the coarse index now rather than on the first job."""
        self.encoder, self.network, self.coarse  # noqa: B018 - cached properties, loaded by reading them

    def repair(self, min_age_s: float = 600.0) -> dict[str, int]:
        """Bring the three stores back in line after a crash (run by every worker at start and by
        `hapvr repair`): features no catalog row names are removed once older than `min_age_s` (younger ones
        may belong to an indexing that is about to commit), and the coarse index catches up with the
        catalog's rows and deletions. Nothing committed is lost or duplicated: the catalog is the truth."""
        orphans = self.store.remove_orphans(min_age_s=min_age_s)
        with self._lock:
            caught_up = self.coarse.sync()
            self.coarse.save()
        return {"orphan_features_removed": orphans, "coarse_changes": caught_up, "videos": self.store.count()}

    def delete(self, video_id: str) -> bool:
        deleted = self.store.delete(video_id)
        if deleted:
            with self._lock:
                self.coarse.sync()
        return deleted

    def save(self) -> None:
        """Persist the coarse index (it is also rebuilt from the store if this never runs)."""
        with self._lock:
            if "coarse" in self.__dict__:
                self.coarse.save()
            if "store" in self.__dict__:
                self.store.checkpoint()
            self._last_save = time.monotonic()

    close = save

    # ----- search
    def query(self, path: str | Path, top_k: int | None = None, min_score: float | None = None,
              label: str | None = None, min_confidence: float | None = None, explain: bool = False,
              matrices: bool = False) -> dict:
        """Embed a video file and search; the CLI/API JSON shape (`matrices`: see `search`).

        The file is hashed too (about 0.2 s per GB, little next to decoding and embedding it): an indexed
        file with the same bytes is reported as an exact duplicate, confidence 1, first, even when the
        query has no evidence to search with (every frame blank).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError("not_found", f"{path}: no such file")
        t0 = time.perf_counter()
        sha = sha256_file(path)
        hash_ms = (time.perf_counter() - t0) * 1000
        emb = self.embed(path, mirrored=self.settings.query_flip)
        if emb.blank:
            result = {"results": [], "note": self.BLANK_QUERY, "timings_ms": {}}
        else:
            result = self.search(emb.features, emb.timestamps, emb.info.duration, top_k, min_score,
                                 mirrored=emb.mirrored, min_confidence=min_confidence, sha256=sha, explain=explain,
                                 matrices=matrices)
        twin = self.store.by_sha256(sha)
        if twin is not None and not any(r.get("exact_duplicate") for r in result["results"]):
            # left out by a filter, or nothing to search with: the same bytes are still the same video
            result["results"] = [self._exact_result(twin), *result["results"]][: top_k or self.settings.top_k]
        result["timings_ms"] = {"hash": round(hash_ms, 1), **{k: round(v, 1) for k, v in emb.timings_ms.items()},
                                **result["timings_ms"]}
        result["timings_ms"]["total"] = round(sum(v for k, v in result["timings_ms"].items() if k != "total"), 1)
        return {"query": label or str(path), **result}

    @staticmethod
    def _exact_result(record: VideoRecord) -> dict:
        """The result of an indexed file with the query's bytes that the search did not return: no score was
        computed (`score` null), the whole of both timelines is the segment."""
        whole = {"query_start": 0.0, "query_end": round(record.duration, 3), "target_start": 0.0,
                 "target_end": round(record.duration, 3), "score": 1.0}
        return {"id": record.id, "source": record.source, "score": None, "confidence": 1.0, "coarse_score": None,
                "mirrored": False, "segments": [whole], "exact_duplicate": True}

    def query_by_id(self, video_id: str, top_k: int | None = None, min_score: float | None = None,
                    min_confidence: float | None = None, explain: bool = False, matrices: bool = False) -> dict:
        """Search with an indexed video's stored features; the video itself is left out."""
        record = self.store.get(video_id)
        if record is None:
            raise InputError("not_found", f"no indexed video with id {video_id}")
        feats = torch.from_numpy(np.asarray(self.store.load_features(video_id), dtype=np.float32))
        result = self.search(feats, record.timestamps, record.duration, top_k, min_score, exclude_seq=record.seq,
                             min_confidence=min_confidence, explain=explain, matrices=matrices)
        return {"query": video_id, **result}

    def search(self, features: torch.Tensor, timestamps: np.ndarray, duration: float, top_k: int | None = None,
               min_score: float | None = None, exclude_seq: int | None = None,
               mirrored: torch.Tensor | None = None, min_confidence: float | None = None,
               sha256: str | None = None, explain: bool = False, max_candidates: int | None = None,
               learned_candidates: int | None = None, frame_neighbours: int | None = None,
               matrices: bool = False) -> dict:
        """Coarse FAISS stage, HAP-VR re-rank of the candidates, then segments and confidence for the
        returned results.

        With `mirrored` (the query's flipped frames), every stage keeps, per
        target, the better of the two orientations. `min_confidence` skips
        results below it (the next candidates take their place, up to
        `top_k`); `sha256` is the query file's: an indexed file with the same
        bytes is an exact duplicate, confidence 1. `explain` adds each
        result's evidence (indexer/confidence.py). `max_candidates` overrides
        HAPVR_CANDIDATES (and bounds the cascade), `learned_candidates` the
        cascade's HAPVR_RERANK_CASCADE (never below `top_k`), `frame_neighbours`
        HAPVR_FRAME_NEIGHBOURS. `matrices` adds each result's frame-to-frame matrix, its segments drawn on
        it and aligned frame pairs (indexer/explain.py: what the web UI's Compare view shows).
        """
        top_k = self.settings.top_k if top_k is None else top_k
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        views = [features] if mirrored is None else [features, mirrored]
        with self._lock:
            self.coarse.sync()
            coarse = [self.coarse.search(frame_descriptors(v.cpu().numpy()),
                                         frame_neighbours or self.settings.frame_neighbours) for v in views]
        # per candidate, the orientation whose coarse score is higher is the one re-ranked
        per_view = [dict(self._aggregate(scores, seqs, exclude_seq, limit=None)) for scores, seqs, _ in coarse]
        best_view: dict[int, tuple[float, int]] = {}
        for v, agg in enumerate(per_view):
            for seq, score in agg.items():
                if seq not in best_view or score > best_view[seq][0]:
                    best_view[seq] = (score, v)
        ranked = sorted(best_view.items(), key=lambda item: -item[1][0])[: max_candidates or self.settings.candidates]
        candidates = [(seq, score) for seq, (score, _) in ranked]
        orientation = {seq: v for seq, (_, v) in ranked}
        t1 = time.perf_counter()
        timings["coarse"] = (t1 - t0) * 1000
        records = self.store.by_seqs([seq for seq, _ in candidates])
        candidates = [(seq, coarse) for seq, coarse in candidates if seq in records]
        # fp16 memory maps, not copies: the re-ranker reads each once while casting it into its batch
        targets = [torch.from_numpy(self.store.load_features(records[seq].id)) for seq, _ in candidates]
        t2 = time.perf_counter()
        timings["load"] = (t2 - t1) * 1000
        fine, f2f = np.zeros(len(targets)), [None] * len(targets)
        # with a Chamfer share, its plain S^F is what segments need: the cascade computes it once, first
        cascade = self.network.learned and bool(self.network.chamfer_mix)
        cascade_size = self.settings.rerank_cascade if learned_candidates is None else learned_candidates
        keep = max(cascade_size, top_k) if cascade_size else None
        if keep is not None and max_candidates is not None:
            keep = min(keep, max(max_candidates, top_k))
        for v, view in enumerate(views):
            chosen = [j for j, (seq, _) in enumerate(candidates) if orientation[seq] == v]
            if not chosen:
                continue
            chosen_targets = [targets[j] for j in chosen]
            if cascade:
                # `keep` is shared by the orientations in proportion to their candidates
                share = None if keep is None else max(top_k, -(-keep * len(chosen) // len(candidates)))
                scores_v, f2f_v = self.network.cascade_similarity(view.to(self.device), chosen_targets, share)
            else:
                scores_v, f2f_v = self.network.similarity(view.to(self.device), chosen_targets)
            for j, score, sim in zip(chosen, scores_v.cpu().numpy(), f2f_v):
                fine[j], f2f[j] = score, sim
        if self.network.uses_comparator:
            fine = (fine + 1) / 2  # Hardtanh output in [-1, 1] -> [0, 1], the scale training uses (affine: same ranking)
        t3 = time.perf_counter()
        timings["rerank"] = (t3 - t2) * 1000
        order = np.argsort(-fine, kind="stable")
        calibration = self.calibration
        results = []
        for idx in order:
            if min_score is not None and fine[idx] < min_score:
                break
            if len(results) >= top_k or not np.isfinite(fine[idx]):  # -inf: left out by the cascade
                break
            record = records[candidates[idx][0]]
            view = orientation[candidates[idx][0]]
            # the untrained network's and the cascade's S^F are already plain cosine; attended ones are not
            sim = (f2f[idx].cpu().numpy() if not self.network.learned or cascade
                   else self.frame_matrix(views[view], targets[idx]))
            alignment = align(sim, timestamps, record.timestamps, duration, record.duration)
            segments = [s.as_dict() for s in alignment.segments]
            ev = conf.evidence(fine[idx], candidates[idx][1], segments, duration, record.duration, sim)
            confidence = None if calibration is None else round(calibration.confidence(ev), 4)
            exact = sha256 is not None and record.sha256 == sha256
            if exact:
                confidence = 1.0
            if min_confidence is not None and (confidence or 0.0) < min_confidence:
                continue
            result = {"id": record.id, "source": record.source, "score": round(float(fine[idx]), 4),
                      "confidence": confidence, "coarse_score": round(float(candidates[idx][1]), 4),
                      "mirrored": view == 1, "segments": segments}
            if exact:
                result["exact_duplicate"] = True
            if alignment.reason:
                result["segments_reason"] = alignment.reason
            if explain:
                result["evidence"] = {k: round(v, 4) for k, v in ev.items()}
            if matrices:
                result["matrix"] = matrix_view(sim, timestamps, record.timestamps, segments)
            results.append(result)
        timings["segments"] = (time.perf_counter() - t3) * 1000
        return {"results": results, "timings_ms": {k: round(v, 1) for k, v in timings.items()}}

    # ----- duplicate sets of the whole collection
    DUPLICATES_DOCUMENT = "duplicates"

    def duplicates(self, min_confidence: float = 0.5, progress: Progress | None = None) -> dict:
        """Group the whole collection into duplicate sets (indexer/duplicates.py).

        Scans the videos not scanned yet (each one's stored features search the collection; its top
        HAPVR_DUPLICATE_NEIGHBOURS pairs are stored with the scan, one transaction per video, so a killed
        job resumes where it stopped), then groups the stored pairs by average linkage at
        `min_confidence`. The result is also kept in the catalog (`last_duplicates`).
        """
        if self.calibration is None:
            raise InputError("no_calibration", "duplicate sets need the calibrated confidence, and no confidence "
                             "map fits this model (docs/MODEL.md, section 6: refit it, or set HAPVR_CONFIDENCE_MAP)")
        start = time.perf_counter()
        model = f"{self.scoring_model}+conf:{hashlib.sha256(repr(self.calibration).encode()).hexdigest()[:12]}"
        neighbours = self.settings.duplicate_neighbours
        todo = self.store.unscanned(model)
        for done, seq in enumerate(todo):
            record = self.store.by_seqs([seq]).get(seq)
            if record is None:  # deleted meanwhile
                continue
            feats = torch.from_numpy(np.asarray(self.store.load_features(record.id), dtype=np.float32))
            found = self.search(feats, record.timestamps, record.duration, top_k=neighbours, exclude_seq=seq,
                                max_candidates=self.settings.duplicate_candidates, learned_candidates=neighbours,
                                frame_neighbours=self.settings.duplicate_frame_neighbours)["results"]
            found = [r for r in found if (r["confidence"] or 0.0) >= dup.FLOOR]
            others = self.store.by_ids([r["id"] for r in found])
            pairs = []
            for r in found:
                other = others.get(r["id"])
                if other is not None:
                    pairs.append(dup.oriented(seq, other.seq, r["confidence"], r["segments"]))
            self.store.record_scan(seq, model, saturated=len(found) >= neighbours, pairs=pairs)
            failpoints.reach("duplicates_scan")  # one video scanned and committed, the job not finished
            if progress:
                progress("scanning", (done + 1) / len(todo))
        pairs, _, saturated = self.store.scanned_pairs()
        groups = dup.average_linkage(((a, b, c) for a, b, c, _ in pairs), saturated, min_confidence)
        records = self.store.by_seqs(sorted({v for g in groups for v in g}))
        result = dup.describe(groups, pairs, records, min_confidence)
        result.update({"videos": self.store.count(), "scanned_now": len(todo), "pairs_scored": len(pairs),
                       "neighbours": neighbours, "model": model,
                       "elapsed_s": round(time.perf_counter() - start, 3), "created": time.time()})
        self.store.put_document(self.DUPLICATES_DOCUMENT, json.dumps(result))
        return result

    def last_duplicates(self) -> dict | None:
        """The last `duplicates` result, kept in the catalog (every API process serves it), or None."""
        body = self.store.get_document(self.DUPLICATES_DOCUMENT)
        return json.loads(body) if body is not None else None

    def frame_matrix(self, query: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """The plain-cosine frame-to-frame matrix S^F of a query view and a target's stored features: what
        segments are found on. Attention scales every region vector by its weight, so the matrix is taken on
        unattended features, and the aligner's thresholds mean the same with and without a checkpoint."""
        sim = self.network.frame_to_frame(F.normalize(query.float(), dim=-1).to(self.device),
                                          F.normalize(target.float(), dim=-1).unsqueeze(0).to(self.device))[0]
        return sim.cpu().numpy()

    def _aggregate(self, scores: np.ndarray, seqs: np.ndarray, exclude_seq: int | None,
                   limit: int | None = None) -> list[tuple[int, float]]:
        """Per video: sum over query frames of its best neighbour score (>= 0), / Tq; best first."""
        if seqs.size == 0:
            return []
        tq = len(seqs)
        rows = np.repeat(np.arange(tq), seqs.shape[1])
        flat_seqs, flat_scores = seqs.ravel(), np.clip(scores.ravel(), 0, None)
        keep = (flat_seqs >= 0) & (flat_seqs != (-2 if exclude_seq is None else exclude_seq))
        rows, flat_seqs, flat_scores = rows[keep], flat_seqs[keep], flat_scores[keep]
        videos, inverse = np.unique(flat_seqs, return_inverse=True)
        best = np.zeros((len(videos), tq), dtype=np.float32)
        np.maximum.at(best, (inverse, rows), flat_scores)
        totals = best.sum(axis=1) / tq
        order = np.argsort(-totals, kind="stable")[:limit]
        return [(int(videos[i]), float(totals[i])) for i in order]

    # ----- the catalogue, for front ends (the HTTP layer reaches stored data only through these)
    def video(self, video_id: str) -> VideoRecord | None:
        return self.store.get(video_id)

    def keyframes(self, video_id: str) -> Keyframes | None:
        """A video's stored key frames (indexer/keyframes.py), None when it has none. The last
        KEYFRAME_CACHE videos' are kept in memory (key frames never change for an id)."""
        with self._lock:
            hit = self._keyframes.get(video_id)
            if hit is not None:
                self._keyframes.move_to_end(video_id)
                return hit
        try:
            frames = Keyframes.load(self.store.media.read(video_id, "keyframes.zip"))
        except KeyError:
            return None
        with self._lock:
            self._keyframes[video_id] = frames
            while len(self._keyframes) > self.KEYFRAME_CACHE:
                self._keyframes.popitem(last=False)
        return frames

    def source_size(self, video_id: str) -> int | None:
        """Bytes of the kept source file, None when the source was not kept (HAPVR_KEEP_UPLOADS)."""
        return self.store.media.size(video_id, "source")

    def source_path(self, video_id: str) -> Path | None:
        """The kept source file on this disk (embedded media store), else None: read it with `read_source`."""
        return self.store.media.file(video_id, "source")

    def read_source(self, video_id: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the kept source file (KeyError where it was not kept)."""
        return self.store.media.read(video_id, "source", start, end)

    def compare(self, query_id: str, target_id: str) -> dict:
        """One indexed pair, explained: the HAP-VR score, confidence, segments and the frame-to-frame matrix
        (indexer/explain.py), from the two videos' stored features as they are (a query by id has no mirrored
        view either)."""
        query, target = self.store.get(query_id), self.store.get(target_id)
        for name, record, wanted in (("video_id", query, query_id), ("other_id", target, target_id)):
            if record is None:
                raise InputError("not_found", f"{name}: no indexed video with id {wanted}")
        q = torch.from_numpy(np.asarray(self.store.load_features(query.id), dtype=np.float32))
        t = torch.from_numpy(np.asarray(self.store.load_features(target.id), dtype=np.float32))
        with torch.inference_mode():
            score = float(self.network.similarity(q.to(self.device), [t])[0].cpu().numpy()[0])
        if self.network.uses_comparator:
            score = (score + 1) / 2
        sim = self.frame_matrix(q, t)
        alignment = align(sim, query.timestamps, target.timestamps, query.duration, target.duration)
        segments = [s.as_dict() for s in alignment.segments]
        coarse = float(np.clip(sim.max(axis=1), 0, None).mean()) if sim.size else 0.0
        ev = conf.evidence(score, coarse, segments, query.duration, target.duration, sim)
        confidence = 1.0 if query.sha256 == target.sha256 else (
            None if self.calibration is None else round(self.calibration.confidence(ev), 4))
        out = {"query": query.public(), "target": target.public(), "score": round(score, 4),
               "confidence": confidence, "segments": segments,
               "matrix": matrix_view(sim, query.timestamps, target.timestamps, segments)}
        if alignment.reason:
            out["segments_reason"] = alignment.reason
        return out

    def video_by_sha256(self, sha256: str) -> VideoRecord | None:
        return self.store.by_sha256(sha256)

    def videos(self, offset: int = 0, limit: int = 100, metadata_filter: dict[str, str] | None = None,
               name: str | None = None) -> tuple[list[VideoRecord], int]:
        """One page of indexed videos in indexing order, and how many match the filters in all (`name`: a
        case-insensitive substring of the source name)."""
        return (self.store.list(offset=offset, limit=limit, metadata_filter=metadata_filter, name=name),
                self.store.count(metadata_filter, name))

    def open(self) -> None:
        """Open (and version-check) the store now rather than on first use: a service fails at start."""
        self.store  # noqa: B018 - the cached property opens it

    def video_count(self) -> int:
        """How many videos are indexed: one catalog count (readiness probes; `stats` also sums storage sizes,
        which on S3 means listing the bucket)."""
        return self.store.count()

    def stats(self) -> dict[str, int]:
        """Cheap counts for health checks and metrics: videos, and bytes of features and SQLite."""
        return {"videos": self.store.count(), "bytes": sum(self.store.sizes().values())}

    # ----- listing
    def info(self) -> dict:
        store = self.store
        with self._lock:
            self.coarse.sync()
            coarse_kind = self.coarse.kind
            frames = self.coarse.size
        faiss_bytes = sum(p.stat().st_size for p in (self.data / "faiss").glob("*.index"))
        total_duration = store.total_duration()
        return {
            "data": str(self.data), "videos": store.count(), "frames": frames,
            "video_hours": round(total_duration / 3600, 4), "model_version": self.model_version,
            "similarity": self.network.mode,
            "checkpoint": str(self.checkpoint_path) if self.checkpoint_path else None,
            "chamfer_mix": self.network.chamfer_mix if self.checkpoint_path else None,
            "comparator": self.network.comparator if self.checkpoint_path else None,
            "coarse_index": coarse_kind, "device": str(self.device),
            **store.sizes(), "faiss_bytes": faiss_bytes,
        }
