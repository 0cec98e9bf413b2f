"""The engine: the one place that turns files into indexed videos and queries into ranked results.

The CLI (`indexer/cli.py`) and the HTTP service (`service/`) both drive this class; neither decodes, embeds
or searches on its own. It is a thin front over stages that are handed their collaborators:

* `indexer/models.py` (`Models`): the encoder, the similarity network and the checkpoint policy, the model
  version and the confidence calibration;
* `indexer/embedding.py` (`Embedder`): decode and embed one video;
* `indexer/ingest.py` (`Ingest`): a file becomes a committed video;
* `indexer/search.py` (`Searcher`): coarse stage, re-rank, segments, confidence; a pair explained;

and it owns what they share: the store (catalog, features, media), the vector index of the coarse stage
and the lock that orders their catch-up, plus the whole-collection work (duplicate sets, repair).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from config.settings import Settings, get_settings
from indexer import duplicates as dup
from indexer import failpoints
from indexer.backends import open_store, open_vectors
from indexer.contracts import VectorIndex
from indexer.embedding import Decoding, Embedded, Embedder, Progress
from indexer.errors import InputError
from indexer.ingest import Ingest, IndexOutcome, sha256_file
from indexer.keyframes import Keyframes
from indexer.models import SHIPPED_CHECKPOINT, Models, bf16_matmul_is_faster
from indexer.search import Searcher
from indexer.store import Store, VideoRecord

log = logging.getLogger(__name__)

__all__ = ["Engine", "Embedded", "Decoding", "IndexOutcome", "Progress", "SHIPPED_CHECKPOINT", "sha256_file",
           "bf16_matmul_is_faster"]


class Engine:
    """Thread-safe for queries; index writes serialise on the store's cross-process lock."""

    #: videos whose key frames stay in memory (about 0.3 MB each at the default 120 key frames)
    KEYFRAME_CACHE = 32
    BLANK_QUERY = Searcher.BLANK_QUERY

    def __init__(self, settings: Settings | None = None, data: str | Path | None = None,
                 models: Models | None = None):
        """`models`: another engine's, already loaded (benchmarks that index into several fresh stores
        with one set of models, as one worker does); they must come from the same model settings."""
        self.settings = settings or get_settings()
        self.data = Path(data) if data is not None else self.settings.data
        self.models = models or Models(self.settings)
        self.embedder = Embedder(self.settings, self.models)
        self._lock = threading.RLock()
        self._last_save = time.monotonic()
        #: the key frames of the videos a front end looked at last (a page reads many frames of few videos)
        self._keyframes: OrderedDict[str, Keyframes] = OrderedDict()
        failpoints.arm(self.settings.failpoints)

    # ----- the models (indexer/models.py), as every front end and benchmark reads them
    device = property(lambda self: self.models.device)
    encoder = property(lambda self: self.models.encoder)
    network = property(lambda self: self.models.network)
    features_version = property(lambda self: self.models.features_version)
    checkpoint_path = property(lambda self: self.models.checkpoint_path)
    model_version = property(lambda self: self.models.model_version)
    scoring_model = property(lambda self: self.models.scoring_model)
    calibration = property(lambda self: self.models.calibration)

    @property
    def batcher(self):
        return self.models.batcher

    @batcher.setter
    def batcher(self, value) -> None:
        """Several jobs of one worker embed through one FrameBatcher (service/worker.py)."""
        self.models.batcher = value

    # ----- what the stages share
    @cached_property
    def store(self) -> Store:
        return open_store(self.settings, self.data, self.model_version)

    @cached_property
    def coarse(self) -> VectorIndex:
        return open_vectors(self.settings, self.store)

    @cached_property
    def ingest(self) -> Ingest:
        return Ingest(self.settings, self.embedder, self.store, self._after_commit)

    @cached_property
    def searcher(self) -> Searcher:
        return Searcher(self.settings, self.models, self.embedder, self.store, self.coarse, self._lock)

    def _after_commit(self) -> None:
        """A video's row committed (indexer/ingest.py): the coarse index catches up, and is saved at most
        once a minute (it is derived: a crash before a save only costs a catch-up from the catalog)."""
        with self._lock:
            self.coarse.sync()
            if time.monotonic() - self._last_save > 60:
                try:
                    self.save()
                except OSError as exc:  # a full disk: the video is committed; the index is derived, saved later
                    log.error("could not save the coarse index (%s); it is rebuilt from the store if need be", exc)
                    self._last_save = time.monotonic()

    # ----- the stages' work, through one front
    def start_decoding(self, path: str | Path, sha256: str | None = None,
                       replaces: VideoRecord | None = None) -> Decoding:
        return self.embedder.start_decoding(path, sha256, replaces)

    def embed(self, path: str | Path, *args, **kwargs) -> Embedded:
        return self.embedder.embed(path, *args, **kwargs)

    def prepare(self, path: str | Path, force: bool = False) -> IndexOutcome | Decoding:
        return self.ingest.prepare(path, force)

    def index(self, path: str | Path, *args, **kwargs) -> IndexOutcome:
        return self.ingest.index(path, *args, **kwargs)

    def index_many(self, paths: Iterable[str | Path], metadata: dict | None = None,
                   force: bool = False) -> Iterator[tuple[Path, IndexOutcome | Exception]]:
        return self.ingest.index_many(paths, metadata, force)

    def query(self, path: str | Path, *args, **kwargs) -> dict:
        return self.searcher.query(path, *args, **kwargs)

    def query_by_id(self, video_id: str, *args, **kwargs) -> dict:
        return self.searcher.query_by_id(video_id, *args, **kwargs)

    def search(self, features: torch.Tensor, timestamps: np.ndarray, duration: float, *args, **kwargs) -> dict:
        return self.searcher.search(features, timestamps, duration, *args, **kwargs)

    def compare(self, query_id: str, target_id: str) -> dict:
        return self.searcher.compare(query_id, target_id)

    def frame_matrix(self, query: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        return self.searcher.frame_matrix(query, target)

    # ----- the collection
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

