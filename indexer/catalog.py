"""The catalog (indexer/contracts.py `Catalog`) in SQL: the statements once, for SQLite (the default, a file
in the data folder) and PostgreSQL (indexer/catalog_postgres.py, cluster mode).

Tables: `info` (model version, catalog identity), `videos` (one row per committed video), `deletions` (the
log the vector index catches up from), the duplicate-set scans, `pair_scans` and `pairs`
(indexer/duplicates.py), and `documents`, results every process serves (the last duplicate sets). Statements are written with `?` placeholders; a dialect says how to run them.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from indexer.errors import InputError
from model.encoder_config import compatible_version

log = logging.getLogger(__name__)

#: what the columns are; the dialects fill in the types that differ ({seq}, {blob}, {gen})
SCHEMA = """
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS videos (
    seq {seq},
    id TEXT UNIQUE NOT NULL,
    source TEXT NOT NULL,
    external_id TEXT,
    sha256 TEXT NOT NULL,
    duration DOUBLE PRECISION NOT NULL,
    fps DOUBLE PRECISION NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    codec TEXT NOT NULL,
    frames INTEGER NOT NULL,
    timestamps {blob} NOT NULL,
    model_version TEXT NOT NULL,
    metadata TEXT NOT NULL DEFAULT '{{}}',
    created DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS videos_sha ON videos(sha256);
CREATE INDEX IF NOT EXISTS videos_external ON videos(external_id);
CREATE TABLE IF NOT EXISTS deletions (gen {gen}, seq BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS pair_scans (seq BIGINT PRIMARY KEY, model TEXT NOT NULL, saturated INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    a BIGINT NOT NULL, b BIGINT NOT NULL, confidence DOUBLE PRECISION NOT NULL, segments TEXT NOT NULL,
    PRIMARY KEY (a, b)
);
CREATE TABLE IF NOT EXISTS documents (name TEXT PRIMARY KEY, body TEXT NOT NULL, updated DOUBLE PRECISION NOT NULL)
"""

COLUMNS = ("seq", "id", "source", "external_id", "sha256", "duration", "fps", "width", "height", "codec",
           "frames", "timestamps", "model_version", "metadata", "created")


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


def _record(row: tuple) -> VideoRecord:
    d = dict(zip(COLUMNS, row))
    d["timestamps"] = np.frombuffer(bytes(d["timestamps"]), dtype=np.float32)
    d["metadata"] = json.loads(d["metadata"])
    return VideoRecord(**d)


def incompatible(location: str, stored: str, wanted: str) -> InputError:
    return InputError(
        "incompatible_store",
        f"{location} holds features of model {stored}, this engine computes {wanted}; "
        "set the settings it was indexed with (HAPVR_FRAME_SIZE, HAPVR_RESIZE_MODE, HAPVR_PCA_PATH, HAPVR_BACKBONE, "
        "HAPVR_CHECKPOINT; the encoder's precision may differ), use another --data directory, or re-index",
    )


class SqlCatalog:
    """The catalog's statements over a DB-API connection; subclasses open it and say how to lock."""

    location: str
    model_version: str
    #: SQL that is true where user metadata key (first argument, a JSON path) equals a value (second)
    JSON_EQUALS = "json_extract(metadata, ?) = ?"

    def __init__(self, model_version: str | None):
        # One connection shared by the threads of a process: statements and transactions run one at a time,
        # results fully fetched under the lock.
        self._mutex = threading.RLock()
        self.model_version = model_version  # type: ignore[assignment]

    # ----- what a dialect provides
    def _execute(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        raise NotImplementedError

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    def write_lock(self) -> contextlib.AbstractContextManager[None]:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def checkpoint(self) -> None:
        """Fold logs into the main file where the engine has such a thing (SQLite's WAL)."""

    def close(self) -> None:
        raise NotImplementedError

    # ----- shared
    def _rows(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        with self._mutex:
            return self._execute(sql, args)

    def _one(self, sql: str, args: tuple | list = ()) -> tuple | None:
        rows = self._rows(sql, args)
        return rows[0] if rows else None

    def _setup(self) -> None:
        """Create the tables and check (or record) the model version and the catalog's identity."""
        with self.write_lock():
            self._create_schema()
            with self._mutex, self._transaction():
                info = dict(self._execute("SELECT key, value FROM info"))
                if "identity" not in info:
                    self._execute("INSERT INTO info VALUES ('identity', ?)", (uuid.uuid4().hex,))
                stored = info.get("model_version")
                if self.model_version is None:  # opened whatever its model: take the catalog's own
                    self.model_version = stored or ""
                elif stored is None:
                    self._execute("INSERT INTO info VALUES ('model_version', ?)", (self.model_version,))
                elif compatible_version(stored) != compatible_version(self.model_version):
                    raise incompatible(self.location, stored, self.model_version)

    def _create_schema(self) -> None:
        raise NotImplementedError

    def identity(self) -> str:
        return self._one("SELECT value FROM info WHERE key='identity'")[0]

    # ----- writes (under write_lock)
    def insert(self, video_id: str, *, source: str, external_id: str | None, sha256: str, duration: float,
               fps: float, width: int, height: int, codec: str, timestamps: np.ndarray,
               metadata: dict | None) -> None:
        ts = np.asarray(timestamps, dtype=np.float32)
        self._rows(
            "INSERT INTO videos (id, source, external_id, sha256, duration, fps, width, height, codec, frames,"
            " timestamps, model_version, metadata, created) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (video_id, source, external_id, sha256, float(duration), float(fps), int(width), int(height), codec,
             len(ts), ts.tobytes(), self.model_version, json.dumps(metadata or {}, sort_keys=True), time.time()),
        )

    def delete(self, seq: int) -> None:
        with self._mutex, self._transaction():
            self._execute("DELETE FROM videos WHERE seq=?", (seq,))
            self._execute("INSERT INTO deletions (seq) VALUES (?)", (seq,))
            self._execute("DELETE FROM pairs WHERE a=? OR b=?", (seq, seq))
            self._execute("DELETE FROM pair_scans WHERE seq=?", (seq,))

    # ----- reads
    _SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM videos"

    def get(self, video_id: str) -> VideoRecord | None:
        row = self._one(f"{self._SELECT} WHERE id=?", (video_id,))
        return _record(row) if row else None

    def by_sha256(self, sha256: str) -> VideoRecord | None:
        row = self._one(f"{self._SELECT} WHERE sha256=? ORDER BY seq LIMIT 1", (sha256,))
        return _record(row) if row else None

    def _in(self, column: str, values: list) -> Iterator[VideoRecord]:
        for start in range(0, len(values), 500):
            chunk = list(values[start : start + 500])
            marks = ",".join("?" * len(chunk))
            for row in self._rows(f"{self._SELECT} WHERE {column} IN ({marks})", chunk):
                yield _record(row)

    def by_seqs(self, seqs: list[int]) -> dict[int, VideoRecord]:
        return {r.seq: r for r in self._in("seq", [int(s) for s in seqs])}

    def by_ids(self, ids: list[str]) -> dict[str, VideoRecord]:
        return {r.id: r for r in self._in("id", ids)}

    def ids(self) -> set[str]:
        return {r[0] for r in self._rows("SELECT id FROM videos")}

    def _where(self, metadata_filter: dict[str, str] | None, name: str | None = None) -> tuple[str, list]:
        """A WHERE clause matching every key: value of user metadata (JSON paths, bound as parameters) and,
        with `name`, a case-insensitive substring of the source name (LIKE wildcards in it are literal)."""
        clauses, args = [], []
        for key, value in (metadata_filter or {}).items():
            clauses.append(self.JSON_EQUALS)
            args += [self._json_path(key), value]
        if name:
            escaped = name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            clauses.append("LOWER(source) LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        return (" WHERE " + " AND ".join(clauses), args) if clauses else ("", [])

    @staticmethod
    def _json_path(key: str) -> Any:
        return f'$."{key}"'

    def list(self, offset: int = 0, limit: int = 100,
             metadata_filter: dict[str, str] | None = None, name: str | None = None) -> list[VideoRecord]:
        where, args = self._where(metadata_filter, name)
        return [_record(r) for r in self._rows(f"{self._SELECT}{where} ORDER BY seq LIMIT ? OFFSET ?",
                                               [*args, limit, offset])]

    def count(self, metadata_filter: dict[str, str] | None = None, name: str | None = None) -> int:
        where, args = self._where(metadata_filter, name)
        return int(self._one(f"SELECT COUNT(*) FROM videos{where}", args)[0])

    def seqs_after(self, seq: int) -> list[tuple[int, str]]:
        return [(int(r[0]), r[1]) for r in self._rows("SELECT seq, id FROM videos WHERE seq > ? ORDER BY seq",
                                                      (seq,))]

    def max_seq(self) -> int:
        return int(self._one("SELECT COALESCE(MAX(seq), 0) FROM videos")[0])

    def deletions_after(self, gen: int) -> tuple[list[int], int]:
        rows = self._rows("SELECT gen, seq FROM deletions WHERE gen > ? ORDER BY gen", (gen,))
        return [int(r[1]) for r in rows], (int(rows[-1][0]) if rows else gen)

    def total_duration(self) -> float:
        return float(self._one("SELECT COALESCE(SUM(duration), 0) FROM videos")[0])

    # ----- documents
    def put_document(self, name: str, body: str) -> None:
        """Replace the document `name` (one statement: readers see the old body or the new one)."""
        self._rows("INSERT INTO documents (name, body, updated) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE "
                   "SET body=excluded.body, updated=excluded.updated", (name, body, time.time()))

    def get_document(self, name: str) -> str | None:
        row = self._one("SELECT body FROM documents WHERE name=?", (name,))
        return row[0] if row else None

    # ----- duplicate-set scans (indexer/duplicates.py)
    def unscanned(self, model: str) -> list[int]:
        """Seqs of the videos whose neighbours have not been scored with `model`, in indexing order. Scans of
        another model (a new checkpoint or calibration) are dropped first: their confidences do not mix."""
        with self.write_lock():
            stale = self._one("SELECT COUNT(*) FROM pair_scans WHERE model != ?", (model,))[0]
            if stale:
                with self._mutex, self._transaction():
                    self._execute("DELETE FROM pair_scans")
                    self._execute("DELETE FROM pairs")
        rows = self._rows("SELECT v.seq FROM videos v LEFT JOIN pair_scans s ON s.seq = v.seq "
                          "WHERE s.seq IS NULL ORDER BY v.seq")
        return [int(r[0]) for r in rows]

    def record_scan(self, seq: int, model: str, saturated: bool,
                    pairs: list[tuple[int, int, float, list[dict]]]) -> None:
        """One video's scan: its scored pairs (a < b; the higher confidence of two scans of a pair stays)
        and the scan row, in one transaction, so that a killed job resumes with the next video."""
        with self.write_lock(), self._mutex, self._transaction():
            if not self._execute("SELECT 1 FROM videos WHERE seq=?", (seq,)):
                return  # deleted while it was being scanned
            if pairs:
                self._executemany(
                    "INSERT INTO pairs (a, b, confidence, segments) SELECT ?, ?, ?, ? "
                    "WHERE EXISTS (SELECT 1 FROM videos WHERE seq=?) "
                    "ON CONFLICT (a, b) DO UPDATE SET confidence=excluded.confidence, segments=excluded.segments "
                    "WHERE excluded.confidence > pairs.confidence",
                    [(int(a), int(b), float(c), json.dumps(segs), int(b if a == seq else a))
                     for a, b, c, segs in pairs])
            self._execute("DELETE FROM pair_scans WHERE seq=?", (seq,))
            self._execute("INSERT INTO pair_scans VALUES (?, ?, ?)", (seq, model, int(saturated)))

    def scanned_pairs(self) -> tuple[list[tuple[int, int, float, list[dict]]], set[int], set[int]]:
        """(pairs of live videos, seqs scanned, seqs whose scan was saturated)."""
        pairs = [(int(r[0]), int(r[1]), float(r[2]), json.loads(r[3])) for r in self._rows(
            "SELECT a, b, confidence, segments FROM pairs WHERE a IN (SELECT seq FROM videos) "
            "AND b IN (SELECT seq FROM videos)")]
        scans = self._rows("SELECT seq, saturated FROM pair_scans WHERE seq IN (SELECT seq FROM videos)")
        return pairs, {int(r[0]) for r in scans}, {int(r[0]) for r in scans if r[1]}


class SqliteCatalog(SqlCatalog):
    """The default: `store.sqlite` in the data folder, WAL mode, one writer at a time by `flock`."""

    DB_NAME = "store.sqlite"

    def __init__(self, root: str | Path, model_version: str | None):
        super().__init__(model_version)
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.location = str(self.root)
        self.db = sqlite3.connect(self.root / self.DB_NAME, timeout=60, check_same_thread=False,
                                  isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self._setup()

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        return (Path(root) / cls.DB_NAME).is_file()

    def _create_schema(self) -> None:
        with self._mutex:
            self.db.executescript(SCHEMA.format(seq="INTEGER PRIMARY KEY AUTOINCREMENT", blob="BLOB",
                                                gen="INTEGER PRIMARY KEY AUTOINCREMENT"))

    def _execute(self, sql: str, args: tuple | list = ()) -> list[tuple]:
        return self.db.execute(sql, args).fetchall()

    def _executemany(self, sql: str, rows: list[tuple]) -> None:
        self.db.executemany(sql, rows)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Exclusive across processes (flock); readers never take it."""
        with open(self.root / "write.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob(self.DB_NAME + "*"))

    def checkpoint(self) -> None:
        """Fold the WAL into the database file and truncate it (keeps the data directory small)."""
        self._rows("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        self.db.close()
