"""Indexing: a file becomes a committed video, idempotently by sha256. Features (and key frames) are stored
before the catalog row commits, the coarse index follows (through the engine's `after_commit`); the next
file of a batch is decoding while the current one is embedded (indexer/prefetch.py)."""
from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from config.settings import Settings
from indexer import failpoints
from indexer.embedding import Decoding, Embedder, Progress
from indexer.errors import InputError
from indexer.keyframes import KeyframeCollector
from indexer.store import Store, VideoRecord

log = logging.getLogger(__name__)


@dataclass
class IndexOutcome:
    record: VideoRecord
    created: bool  # False: the same file (sha256) was already indexed
    timings_ms: dict[str, float] = field(default_factory=dict)


def _log_unexpected(path: Path, exc: Exception) -> None:
    if not isinstance(exc, InputError):  # bad input is the caller's to report; anything else is a bug
        log.error("unexpected error on %s", path, exc_info=exc)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Ingest:
    """`after_commit` runs once a video's row is committed: the engine catches its coarse index up then."""

    def __init__(self, settings: Settings, embedder: Embedder, store: Store, after_commit: Callable[[], None]):
        self.settings, self.embedder, self.store, self.after_commit = settings, embedder, store, after_commit

    def prepare(self, path: str | Path, force: bool = False) -> IndexOutcome | Decoding:
        """The outcome when the same file (sha256) is already indexed and not `force`d; else its decoding, started."""
        path = Path(path)
        if not path.is_file():
            raise InputError("not_found", f"{path}: no such file")
        sha = sha256_file(path)
        existing = self.store.by_sha256(sha)
        if existing and not force:
            return IndexOutcome(existing, created=False)
        return self.embedder.start_decoding(path, sha256=sha, replaces=existing)

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
        emb = self.embedder.embed(decoding.path, progress, decoding=decoding, keep_fp16=True, keyframes=keyframes)
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
        self.after_commit()
        timings = dict(emb.timings_ms, store=(time.perf_counter() - t0) * 1000)
        if progress:
            progress("indexing", 1.0)
        return IndexOutcome(record, created=True, timings_ms=timings)
