"""The seams of the index: what the engine needs from each store, declared once, so that a backend is chosen
by configuration (indexer/backends.py) and every backend passes one contract suite (tests/test_contracts.py).

Three stores hold a collection, and one of them is the truth:

* the **catalog** (`Catalog`): one row per video, the model version, the deletion log and the duplicate-set
  scans. A video exists once its row commits. SQLite in the data folder by default; PostgreSQL in cluster
  mode.
* the **feature store** (`FeatureStore`): one immutable T x R x D fp16 array per video id. Files in the
  data folder by default (memory-mapped); S3-compatible object storage in cluster mode.
* the **vector index** of the coarse stage (`VectorIndex`: FAISS in the data folder by default, Milvus in
  cluster mode): derived from the other two, it catches up with the catalog's rows and deletion log, so it
  can be rebuilt or lag without losing anything.

The order of writes keeps them consistent: features are put (durably) before the row commits, the vector
index follows the catalog; a delete removes the row (logging it) before the features. A crash leaves at most
features that no row names, which `Store.remove_orphans` removes once they are old.

A fourth store, the **media store** (`MediaStore`), keeps what people look at rather than what the search
reads: each video's key frames, and its source file where the operator keeps uploads. It is written beside
the features (before the row commits) and cleaned with them, so it never names a video the catalog lacks.

The fifth seam, the job queue, belongs to the service: `service.jobs.JobQueue`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from indexer.catalog import VideoRecord


@runtime_checkable
class FeatureStore(Protocol):
    """Immutable per-video feature arrays, keyed by video id."""

    #: where the features live, for messages and `hapvr stats` (a folder or an s3:// URL)
    location: str

    def put(self, video_id: str, features: np.ndarray) -> None:
        """Store `features` as fp16, durable when this returns; nothing half-written is ever readable.
        Raises InputError(storage_full) when the storage has no room."""

    def get(self, video_id: str) -> np.ndarray:
        """The array put under `video_id` (KeyError if there is none). May be memory-mapped or cached: the
        caller must not write to it in place."""

    def delete(self, video_id: str) -> None:
        """Remove the array if it exists (deleting a missing one is not an error)."""

    def list(self) -> Iterator[tuple[str, float]]:
        """(video id, seconds since it was written) of every stored array."""

    def size(self) -> int:
        """Bytes stored."""


@runtime_checkable
class MediaStore(Protocol):
    """Per-video blobs for front ends, keyed by (video id, name): `keyframes.zip` (indexer/keyframes.py) and
    `source` (the uploaded file, when HAPVR_KEEP_UPLOADS is on)."""

    location: str

    def put(self, video_id: str, name: str, body: bytes) -> None:
        """Store `body` whole (never half-written)."""

    def put_file(self, video_id: str, name: str, path: Path) -> None:
        """Store a file's bytes; the file stays where it is (a job delivered again reads it again)."""

    def size(self, video_id: str, name: str) -> int | None:
        """Bytes stored under the name, None when there is none."""

    def read(self, video_id: str, name: str, start: int = 0, end: int | None = None) -> bytes:
        """Bytes [start, end) of a stored blob (KeyError if there is none): HTTP Range requests."""

    def delete(self, video_id: str) -> None:
        """Remove every blob of the video (a missing one is not an error)."""

    def list(self) -> Iterator[tuple[str, float]]:
        """(video id, seconds since its newest blob was written) of every video with blobs."""


@runtime_checkable
class VectorIndex(Protocol):
    """The coarse stage: one descriptor per sampled frame, ids packing (video seq, frame index). Derived from
    the catalog and the features: FAISS files in the data folder (indexer/coarse.py, the default) or Milvus
    (indexer/vectors_milvus.py)."""

    #: what the index is, for `hapvr info` ("flat-fp16", "ivf-sq8", "milvus (autoindex)", ...)
    kind: str
    #: frames held
    size: int

    def sync(self) -> int:
        """Apply the catalog's deletions and add the rows committed since the last catch-up; returns how
        many videos changed."""

    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tq x D frame descriptors -> (scores, video seqs, frame indices), each Tq x k' (seq -1: none)."""

    def save(self) -> None:
        """Persist what is not persisted yet (cheap when nothing changed)."""


@runtime_checkable
class Catalog(Protocol):
    """Video rows and everything that must change with them in one transaction.

    Every write runs under `write_lock()`, which excludes writers in every process that shares the catalog
    (a file lock for SQLite, an advisory lock for PostgreSQL): `seq` numbers are then given out in commit
    order, which the vector index's catch-up (`seqs_after`) relies on.
    """

    #: where the catalog lives, for messages (a path or a URL without its password)
    location: str
    model_version: str

    def write_lock(self) -> contextlib.AbstractContextManager[None]: ...

    def insert(self, video_id: str, *, source: str, external_id: str | None, sha256: str, duration: float,
               fps: float, width: int, height: int, codec: str, timestamps: np.ndarray,
               metadata: dict | None) -> None: ...

    def delete(self, seq: int) -> None:
        """Remove the row, log the deletion, and drop its duplicate-set pairs, in one transaction."""

    def get(self, video_id: str) -> VideoRecord | None: ...
    def by_sha256(self, sha256: str) -> VideoRecord | None: ...
    def by_seqs(self, seqs: list[int]) -> dict[int, VideoRecord]: ...
    def by_ids(self, ids: list[str]) -> dict[str, VideoRecord]: ...
    def ids(self) -> set[str]: ...
    def list(self, offset: int = 0, limit: int = 100, metadata_filter: dict[str, str] | None = None,
             name: str | None = None) -> list[VideoRecord]:
        """One page in indexing order, filtered on metadata and on a substring of the source name."""
    def count(self, metadata_filter: dict[str, str] | None = None, name: str | None = None) -> int: ...
    def seqs_after(self, seq: int) -> list[tuple[int, str]]: ...
    def max_seq(self) -> int: ...
    def deletions_after(self, gen: int) -> tuple[list[int], int]: ...
    def total_duration(self) -> float: ...
    def unscanned(self, model: str) -> list[int]: ...
    def record_scan(self, seq: int, model: str, saturated: bool,
                    pairs: list[tuple[int, int, float, list[dict]]]) -> None: ...
    def scanned_pairs(self) -> tuple[list[tuple[int, int, float, list[dict]]], set[int], set[int]]: ...
    def put_document(self, name: str, body: str) -> None:
        """A result every process serves (the last duplicate sets), replaced whole."""
    def get_document(self, name: str) -> str | None: ...
    def size_bytes(self) -> int: ...
    def identity(self) -> str:
        """A random id made when the catalog was created: a derived index built for another catalog (a
        recreated database, a restored folder) is not reused."""
    def checkpoint(self) -> None: ...
    def close(self) -> None: ...
