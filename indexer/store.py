"""The store: a catalog and a feature store (indexer/contracts.py), and the order of writes between them
that keeps a collection consistent whatever process crashes where.

Embedded default, everything under the data directory:

    store.sqlite            the catalog (indexer/catalog.py): videos, deletions, model version, the
                            duplicate-set scans (indexer/duplicates.py) and the last duplicate sets
    features/<id>.npy       the feature store (indexer/features.py): T x 9 x 512 fp16, the similarity
                            network's index_video output
    media/<id>/             the media store (indexer/media.py): key frames, and the kept upload
    faiss/                  the coarse index (derived; see indexer/coarse.py)
    write.lock              one writer at a time, across processes

Cluster mode puts the catalog in PostgreSQL and the features in S3-compatible storage
(indexer/backends.py); the data directory then only holds what a process derives for itself.

The catalog is the source of truth. A video is visible once its row commits, and the row is only written
after its features are stored durably, so a crash at any moment leaves either no row (the features are an
orphan, removed later by `remove_orphans`) or a complete video. A delete removes the row first (logging the
deletion for the coarse index), then the features.
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import uuid
from pathlib import Path

import numpy as np

from indexer.catalog import SqliteCatalog, VideoRecord
from indexer.contracts import Catalog, FeatureStore, MediaStore
from indexer.errors import InputError
from indexer.features import LocalFeatures
from indexer.media import LocalMedia

log = logging.getLogger(__name__)

__all__ = ["Store", "VideoRecord"]


class Store:
    """A catalog and a feature store, used together. Safe for many readers and one writer at a time."""

    DB_NAME = SqliteCatalog.DB_NAME

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        """Whether `root` holds an embedded store (readers refuse a folder that does not, instead of creating one)."""
        return SqliteCatalog.exists(root)

    @classmethod
    def open_existing(cls, root: str | Path) -> "Store":
        """Open an embedded store whatever model it was indexed with: for work that reads or deletes rows and
        loads no model (`hapvr list`, `hapvr delete`). Raises InputError(no_store) where there is none."""
        if not cls.exists(root):
            raise InputError("no_store", f"{root}: no index here")
        return cls(root, model_version=None)

    def __init__(self, root: str | Path, model_version: str | None, *, catalog: Catalog | None = None,
                 features: FeatureStore | None = None, media: MediaStore | None = None):
        """`root`: the data directory (what a process derives, and the embedded stores' default place).
        `model_version` None: the catalog's own, unchecked (see `open_existing`)."""
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.features = features if features is not None else LocalFeatures(self.root / "features")
        self.catalog = catalog if catalog is not None else SqliteCatalog(self.root, model_version)
        self.media = media if media is not None else LocalMedia(self.root / "media")
        self.model_version = self.catalog.model_version

    @property
    def embedded(self) -> bool:
        """Both stores in the data directory (the default)."""
        return isinstance(self.catalog, SqliteCatalog) and isinstance(self.features, LocalFeatures)

    def write_lock(self) -> contextlib.AbstractContextManager[None]:
        """Exclusive across every process that shares the catalog; readers never take it."""
        return self.catalog.write_lock()

    # ----- writes
    def write_features(self, features: np.ndarray) -> str:
        """Store T x R x D fp16 features under a fresh id; durable before any row names it."""
        video_id = uuid.uuid4().hex[:16]
        self.features.put(video_id, features)
        return video_id

    def discard_features(self, video_id: str) -> None:
        """Features (and media) whose row will never be written (the indexing failed after they were stored)."""
        self.features.delete(video_id)
        self.media.delete(video_id)

    def commit_video(self, video_id: str, *, source: str, external_id: str | None, sha256: str, duration: float,
                     fps: float, width: int, height: int, codec: str, timestamps: np.ndarray,
                     metadata: dict | None = None) -> VideoRecord:
        """Insert the row that makes stored features a visible video (call under write_lock)."""
        try:
            self.catalog.insert(video_id, source=source, external_id=external_id, sha256=sha256,
                                duration=duration, fps=fps, width=width, height=height, codec=codec,
                                timestamps=timestamps, metadata=metadata)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            self.features.delete(video_id)  # the row never landed: its features go too
            self.media.delete(video_id)
            raise InputError("storage_full", f"{self.root}: the disk is full; nothing was indexed") from None
        record = self.catalog.get(video_id)
        assert record is not None
        return record

    def delete(self, video_id: str) -> bool:
        """Remove the row (recording the deletion for the coarse index), then the features and media."""
        with self.write_lock():
            record = self.catalog.get(video_id)
            if record is None:
                return False
            self.catalog.delete(record.seq)
            self.features.delete(video_id)
            self.media.delete(video_id)
        return True

    def remove_orphans(self, min_age_s: float = 600.0) -> int:
        """Features and media no row names (a crash before the row committed); only old ones, under the lock.
        Returns how many videos' features were removed."""
        removed = 0
        with self.write_lock():
            known = self.catalog.ids()
            for video_id, age in list(self.features.list()):
                if video_id not in known and age >= min_age_s:
                    self.features.delete(video_id)
                    removed += 1
            for video_id, age in list(self.media.list()):
                if video_id not in known and age >= min_age_s:
                    self.media.delete(video_id)
        return removed

    # ----- reads
    def load_features(self, video_id: str) -> np.ndarray:
        """fp16 T x R x D, memory-mapped or cached: never written to in place."""
        return self.features.get(video_id)

    def get(self, video_id: str) -> VideoRecord | None:
        return self.catalog.get(video_id)

    def by_sha256(self, sha256: str) -> VideoRecord | None:
        return self.catalog.by_sha256(sha256)

    def by_seqs(self, seqs: list[int]) -> dict[int, VideoRecord]:
        return self.catalog.by_seqs(seqs)

    def by_ids(self, ids: list[str]) -> dict[str, VideoRecord]:
        return self.catalog.by_ids(ids)

    def list(self, offset: int = 0, limit: int = 100, metadata_filter: dict[str, str] | None = None,
             name: str | None = None) -> list[VideoRecord]:
        return self.catalog.list(offset=offset, limit=limit, metadata_filter=metadata_filter, name=name)

    def count(self, metadata_filter: dict[str, str] | None = None, name: str | None = None) -> int:
        return self.catalog.count(metadata_filter, name)

    def seqs_after(self, seq: int) -> list[tuple[int, str]]:
        return self.catalog.seqs_after(seq)

    def max_seq(self) -> int:
        return self.catalog.max_seq()

    def deletions_after(self, gen: int) -> tuple[list[int], int]:
        return self.catalog.deletions_after(gen)

    def total_duration(self) -> float:
        return self.catalog.total_duration()

    # ----- duplicate-set scans (indexer/duplicates.py)
    def unscanned(self, model: str) -> list[int]:
        return self.catalog.unscanned(model)

    def record_scan(self, seq: int, model: str, saturated: bool,
                    pairs: list[tuple[int, int, float, list[dict]]]) -> None:
        self.catalog.record_scan(seq, model, saturated, pairs)

    def scanned_pairs(self) -> tuple[list[tuple[int, int, float, list[dict]]], set[int], set[int]]:
        return self.catalog.scanned_pairs()

    def put_document(self, name: str, body: str) -> None:
        self.catalog.put_document(name, body)

    def get_document(self, name: str) -> str | None:
        return self.catalog.get_document(name)

    # ----- upkeep
    def sizes(self) -> dict[str, int]:
        return {"features_bytes": self.features.size(), "sqlite_bytes": self.catalog.size_bytes()}

    def checkpoint(self) -> None:
        self.catalog.checkpoint()

    def close(self) -> None:
        self.catalog.close()
