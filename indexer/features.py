"""The default feature store (indexer/contracts.py `FeatureStore`): one `.npy` file per video under
`<data>/features/`, written to a temporary name, fsynced and renamed, and read memory-mapped."""
from __future__ import annotations

import errno
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from indexer.errors import InputError


class LocalFeatures:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.location = str(self.folder)

    def path(self, video_id: str) -> Path:
        return self.folder / f"{video_id}.npy"

    def put(self, video_id: str, features: np.ndarray) -> None:
        path = self.path(video_id)
        tmp = path.with_suffix(".tmp")
        try:
            with open(tmp, "wb") as handle:
                np.save(handle, np.ascontiguousarray(features, dtype=np.float16))
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)  # nothing half-written stays behind
            # numpy's tofile reports a short write without an errno: ask the file system whether it is full
            full = shutil.disk_usage(self.folder).free < features.size * 2
            if exc.errno in (errno.ENOSPC, errno.EDQUOT) or full:
                raise InputError("storage_full", f"{self.folder}: no space left for a video's features "
                                                 f"({features.size * 2 // 1024} KiB); nothing was indexed") from None
            raise
        tmp.replace(path)

    def get(self, video_id: str) -> np.ndarray:
        """Memory-mapped fp16 T x R x D (no copy until used).

        Copy-on-write ("c"): writable for torch.from_numpy without a copy; a write would change private
        pages only, never the file.
        """
        try:
            return np.load(self.path(video_id), mmap_mode="c")
        except FileNotFoundError:
            raise KeyError(video_id) from None

    def delete(self, video_id: str) -> None:
        self.path(video_id).unlink(missing_ok=True)

    def list(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for path in self.folder.iterdir():
            try:
                age = now - path.stat().st_mtime
            except FileNotFoundError:  # removed meanwhile
                continue
            yield path.name.split(".")[0], age

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.folder.glob("*.npy"))
