"""The on-disk store: SQLite rows, fp16 feature files, and the write lock.

Layout under the data directory:

    store.sqlite            videos (one row per committed video), deletions, store info, and the
                            duplicate-set scans: each video's scored neighbour pairs (indexer/duplicates.py)
    features/<id>.npy       T x 9 x 512 fp16: the similarity network's index_video output
    faiss/                  the coarse index (derived; see indexer/coarse.py)
    write.lock              one writer at a time, across processes

SQLite is the source of truth. A video is visible once its row commits, and
the row is only written after its feature file has been renamed into place,
so a crash at any moment leaves either no row (the file is an orphan, removed
later) or a complete video. The FAISS index is derived from rows + features
and catches up from them when it is stale.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from indexer.errors import InputError

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    source TEXT NOT NULL,
    external_id TEXT,
    sha256 TEXT NOT NULL,
    duration REAL NOT NULL,
    fps REAL NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    codec TEXT NOT NULL,
    frames INTEGER NOT NULL,
    timestamps BLOB NOT NULL,
    model_version TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{}',
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_sha ON videos(sha256);
CREATE INDEX IF NOT EXISTS videos_external ON videos(external_id);
CREATE TABLE IF NOT EXISTS deletions (gen INTEGER PRIMARY KEY AUTOINCREMENT, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pair_scans (seq INTEGER PRIMARY KEY, model TEXT NOT NULL, saturated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    a INTEGER NOT NULL, b INTEGER NOT NULL, confidence REAL NOT NULL, segments TEXT NOT NULL,
    PRIMARY KEY (a, b)
);
"""


@dataclass
class VideoRecord:
    seq: int
    id: str
    source: str
    external_id: str | None
    sha256: str
    duration: float
    fps: float
    width: int
    height: int
    codec: str
    frames: int
    timestamps: np.ndarray
    model_version: str
    metadata: dict = field(default_factory=dict)
    created: float = 0.0

    def public(self) -> dict:
        """JSON-friendly view (no internal seq, no timestamps array)."""
        return {
            "id": self.id, "source": self.source, "external_id": self.external_id, "sha256": self.sha256,
            "duration": round(self.duration, 3), "fps": round(self.fps, 3), "width": self.width,
            "height": self.height, "codec": self.codec, "frames": self.frames,
            "model_version": self.model_version, "metadata": self.metadata, "created": self.created,
        }


def _record(row: sqlite3.Row) -> VideoRecord:
    d = dict(row)
    d["timestamps"] = np.frombuffer(d["timestamps"], dtype=np.float32)
    d["metadata"] = json.loads(d["metadata"])
    return VideoRecord(**d)


class Store:
    """SQLite + feature files under one directory. Safe for many readers and one writer at a time."""

    DB_NAME = "store.sqlite"

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        """Whether `root` holds a store (readers refuse a folder that does not, instead of creating one)."""
        return (Path(root) / cls.DB_NAME).is_file()

    @classmethod
    def open_existing(cls, root: str | Path) -> "Store":
        """Open a store whatever model it was indexed with: for work that reads or deletes rows and loads no
        model (`hapvr list`, `hapvr delete`). Raises InputError(no_store) where there is none."""
        if not cls.exists(root):
            raise InputError("no_store", f"{root}: no index here")
        return cls(root, model_version=None)

    def __init__(self, root: str | Path, model_version: str | None):
        """`model_version` None: the store's own, unchecked (see `open_existing`)."""
        self.root = Path(root)
        self.features_dir = self.root / "features"
        self.features_dir.mkdir(parents=True, exist_ok=True)
        self.model_version = model_version
        self.db = sqlite3.connect(self.root / self.DB_NAME, timeout=60, check_same_thread=False,
                                  isolation_level=None)
        self.db.row_factory = sqlite3.Row
        # One connection shared by the threads of a process: statements and the
        # delete transaction run one at a time, results fully fetched under the lock.
        self._mutex = threading.RLock()
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        with self.write_lock():
            self.db.executescript(SCHEMA)
            self._check_version()

    # ----- concurrency
    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive across processes (flock); readers never take it."""
        with open(self.root / "write.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _check_version(self) -> None:
        row = self.db.execute("SELECT value FROM info WHERE key='model_version'").fetchone()
        if self.model_version is None:  # open_existing: take the store's version as it is
            self.model_version = row[0] if row else ""
            return
        if row is None:
            self.db.execute("INSERT INTO info VALUES ('model_version', ?)", (self.model_version,))
        elif row[0] != self.model_version:
            raise InputError(
                "incompatible_store",
                f"{self.root} holds features of model {row[0]}, this engine computes {self.model_version}; "
                "set the settings it was indexed with (HAPVR_FRAME_SIZE, HAPVR_ENCODER_PRECISION, HAPVR_PCA_PATH, "
                "HAPVR_CHECKPOINT), use another --data directory, or re-index",
            )

    def _rows(self, sql: str, args: tuple | list = ()) -> list[sqlite3.Row]:
        with self._mutex:
            return self.db.execute(sql, args).fetchall()

    def _one(self, sql: str, args: tuple | list = ()) -> sqlite3.Row | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    # ----- writes
    def feature_path(self, video_id: str) -> Path:
        return self.features_dir / f"{video_id}.npy"

    def write_features(self, features: np.ndarray) -> str:
        """Write T x R x D fp16 features under a fresh id; durable before any row names it."""
        video_id = uuid.uuid4().hex[:16]
        path = self.feature_path(video_id)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(features, dtype=np.float16))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # nothing half-written stays behind
            # numpy's tofile reports a short write without an errno: ask the file system whether it is full
            full = shutil.disk_usage(self.features_dir).free < features.size * 2
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) or full:
                raise InputError("storage_full", f"{self.features_dir}: no space left for a video's features "
                                                 f"({features.size * 2 // 1024} KiB); nothing was indexed") from None
            raise
        tmp.replace(path)
        return video_id

    def commit_video(self, video_id: str, *, source: str, external_id: str | None, sha256: str, duration: float,
                     fps: float, width: int, height: int, codec: str, timestamps: np.ndarray,
                     metadata: dict | None = None) -> VideoRecord:
        """Insert the row that makes a written feature file a visible video (call under write_lock)."""
        ts = np.asarray(timestamps, dtype=np.float32)
        try:
            self._insert_video(video_id, source, external_id, sha256, duration, fps, width, height, codec, ts,
                               metadata)
        except sqlite3.OperationalError as exc:
            if "full" not in str(exc):
                raise
            self.feature_path(video_id).unlink(missing_ok=True)  # the row never landed: its file goes too
            raise InputError("storage_full", f"{self.root}: the disk is full; nothing was indexed") from None
        record = self.get(video_id)
        assert record is not None
        return record

    def _insert_video(self, video_id, source, external_id, sha256, duration, fps, width, height, codec, ts,
                      metadata) -> None:
        self._rows(
            "INSERT INTO videos (id, source, external_id, sha256, duration, fps, width, height, codec, frames,"
            " timestamps, model_version, metadata, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (video_id, source, external_id, sha256, duration, fps, width, height, codec, len(ts), ts.tobytes(),
             self.model_version, json.dumps(metadata or {}, sort_keys=True), time.time()),
        )

    def delete(self, video_id: str) -> bool:
        """Remove row (recording the deletion for the FAISS index), then the feature file."""
        with self.write_lock():
            record = self.get(video_id)
            if record is None:
                return False
            with self._mutex:
                self.db.execute("BEGIN IMMEDIATE")
                try:
                    self.db.execute("DELETE FROM videos WHERE seq=?", (record.seq,))
                    self.db.execute("INSERT INTO deletions (seq) VALUES (?)", (record.seq,))
                    self.db.execute("DELETE FROM pairs WHERE a=? OR b=?", (record.seq, record.seq))
                    self.db.execute("DELETE FROM pair_scans WHERE seq=?", (record.seq,))
                    self.db.execute("COMMIT")
                except BaseException:
                    self.db.execute("ROLLBACK")
                    raise
            self.feature_path(video_id).unlink(missing_ok=True)
        return True

    def remove_orphans(self, min_age_s: float = 600.0) -> int:
        """Feature files no row names (a crash between file and row); only old ones, under the lock."""
        removed = 0
        with self.write_lock():
            known = {r[0] for r in self._rows("SELECT id FROM videos")}
            now = time.time()
            for path in self.features_dir.iterdir():
                stem = path.name.split(".")[0]
                if stem not in known and now - path.stat().st_mtime >= min_age_s:
                    path.unlink(missing_ok=True)
                    removed += 1
        return removed

    # ----- reads
    def get(self, video_id: str) -> VideoRecord | None:
        row = self._one("SELECT * FROM videos WHERE id=?", (video_id,))
        return _record(row) if row else None

    def by_sha256(self, sha256: str) -> VideoRecord | None:
        row = self._one("SELECT * FROM videos WHERE sha256=? ORDER BY seq LIMIT 1", (sha256,))
        return _record(row) if row else None

    def by_seqs(self, seqs: list[int]) -> dict[int, VideoRecord]:
        out: dict[int, VideoRecord] = {}
        for start in range(0, len(seqs), 500):
            chunk = seqs[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._rows(f"SELECT * FROM videos WHERE seq IN ({marks})", chunk):
                out[row["seq"]] = _record(row)
        return out

    def by_ids(self, ids: list[str]) -> dict[str, VideoRecord]:
        out: dict[str, VideoRecord] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for row in self._rows(f"SELECT * FROM videos WHERE id IN ({','.join('?' * len(chunk))})", chunk):
                out[row["id"]] = _record(row)
        return out

    @staticmethod
    def _where(metadata_filter: dict[str, str] | None) -> tuple[str, list]:
        """A WHERE clause matching every key: value of user metadata (JSON paths, bound as parameters)."""
        if not metadata_filter:
            return "", []
        clauses, args = [], []
        for key, value in metadata_filter.items():
            clauses.append("json_extract(metadata, ?) = ?")
            args += [f'$."{key}"', value]
        return " WHERE " + " AND ".join(clauses), args

    def list(self, offset: int = 0, limit: int = 100, metadata_filter: dict[str, str] | None = None) -> list[VideoRecord]:
        where, args = self._where(metadata_filter)
        sql = f"SELECT * FROM videos{where} ORDER BY seq LIMIT ? OFFSET ?"
        return [_record(r) for r in self._rows(sql, [*args, limit, offset])]

    def count(self, metadata_filter: dict[str, str] | None = None) -> int:
        where, args = self._where(metadata_filter)
        return int(self._one(f"SELECT COUNT(*) FROM videos{where}", args)[0])

    def seqs_after(self, seq: int) -> list[tuple[int, str]]:
        return [(r[0], r[1]) for r in self._rows("SELECT seq, id FROM videos WHERE seq > ? ORDER BY seq", (seq,))]

    def max_seq(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(seq), 0) FROM videos")[0])

    def deletions_after(self, gen: int) -> tuple[list[int], int]:
        rows = self._rows("SELECT gen, seq FROM deletions WHERE gen > ? ORDER BY gen", (gen,))
        return [r[1] for r in rows], (rows[-1][0] if rows else gen)

    # ----- duplicate-set scans (indexer/duplicates.py)
    def unscanned(self, model: str) -> list[int]:
        """Seqs of the videos whose neighbours have not been scored with `model`, in indexing order. Scans of
        another model (a new checkpoint or calibration) are dropped first: their confidences do not mix."""
        with self.write_lock():
            stale = self._one("SELECT COUNT(*) FROM pair_scans WHERE model != ?", (model,))[0]
            if stale:
                with self._mutex:
                    self.db.execute("BEGIN IMMEDIATE")
                    self.db.execute("DELETE FROM pair_scans")
                    self.db.execute("DELETE FROM pairs")
                    self.db.execute("COMMIT")
        rows = self._rows("SELECT v.seq FROM videos v LEFT JOIN pair_scans s ON s.seq = v.seq "
                          "WHERE s.seq IS NULL ORDER BY v.seq")
        return [r[0] for r in rows]

    def record_scan(self, seq: int, model: str, saturated: bool,
                    pairs: list[tuple[int, int, float, list[dict]]]) -> None:
        """One video's scan: its scored pairs (a < b; the higher confidence of two scans of a pair stays)
        and the scan row, in one transaction, so that a killed job resumes with the next video."""
        with self.write_lock(), self._mutex:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self.db.execute("SELECT 1 FROM videos WHERE seq=?", (seq,)).fetchone() is not None:
                    self.db.executemany(
                        "INSERT INTO pairs (a, b, confidence, segments) SELECT ?, ?, ?, ? "
                        "WHERE EXISTS (SELECT 1 FROM videos WHERE seq=?) "
                        "ON CONFLICT (a, b) DO UPDATE SET confidence=excluded.confidence, segments=excluded.segments "
                        "WHERE excluded.confidence > pairs.confidence",
                        [(a, b, c, json.dumps(segs), b if a == seq else a) for a, b, c, segs in pairs])
                    self.db.execute("INSERT OR REPLACE INTO pair_scans VALUES (?, ?, ?)", (seq, model, int(saturated)))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def scanned_pairs(self) -> tuple[list[tuple[int, int, float, list[dict]]], set[int], set[int]]:
        """(pairs of live videos, seqs scanned, seqs whose scan was saturated)."""
        pairs = [(r[0], r[1], r[2], json.loads(r[3])) for r in self._rows(
            "SELECT a, b, confidence, segments FROM pairs WHERE a IN (SELECT seq FROM videos) "
            "AND b IN (SELECT seq FROM videos)")]
        scans = self._rows("SELECT seq, saturated FROM pair_scans WHERE seq IN (SELECT seq FROM videos)")
        return pairs, {r[0] for r in scans}, {r[0] for r in scans if r[1]}

    def load_features(self, video_id: str) -> np.ndarray:
        """Memory-mapped fp16 T x R x D (no copy until used).

        Copy-on-write ("c"): writable for torch.from_numpy without a copy; a
        write would change private pages only, never the file.
        """
        return np.load(self.feature_path(video_id), mmap_mode="c")

    def total_duration(self) -> float:
        return float(self._one("SELECT COALESCE(SUM(duration), 0) FROM videos")[0])

    def sizes(self) -> dict[str, int]:
        features = sum(p.stat().st_size for p in self.features_dir.glob("*.npy"))
        db = sum(p.stat().st_size for p in self.root.glob("store.sqlite*"))
        return {"features_bytes": features, "sqlite_bytes": db}

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (keeps the data directory small)."""
        self._rows("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.db.close()
