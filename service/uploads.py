"""Streaming uploads to disk with a size limit, content sniffing and a running sha256.

An upload is written to `<uploads>/<uuid>-<name>.part` while its writer holds an exclusive flock on it,
then renamed to its final name. A `.part` file nobody holds a lock on belongs to a process that died
mid-upload (kill -9, power loss): `sweep_partial` removes those, and the API runs it at start. A finished
upload belongs to its job; the worker removes it when the job ends, and the API when it cancels a queued one.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import re
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile

from indexer.decode import sniff

log = logging.getLogger(__name__)

CHUNK = 1 << 20
PARTIAL = ".part"


class UploadRejected(Exception):
    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class SavedUpload:
    path: Path
    filename: str
    sha256: str
    size: int
    container: str


def safe_name(name: str | None) -> str:
    base = Path(name or "upload").name
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base)[-120:] or "upload"


async def save_upload(upload: UploadFile, folder: Path, max_bytes: int) -> SavedUpload:
    """Copy chunk by chunk (never the whole file in memory); 415 before anything is decoded if the
    first bytes are not a video container, 413 as soon as the limit is passed, 507 when the disk is full.
    Nothing is left behind by a rejected or interrupted upload."""
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(upload.filename)
    dest = folder / f"{uuid.uuid4().hex}-{name}"
    part = dest.with_name(dest.name + PARTIAL)
    digest = hashlib.sha256()
    size = 0
    container = None
    try:
        with open(part, "wb") as out:
            fcntl.flock(out, fcntl.LOCK_EX)  # held until closed: sweep_partial leaves live uploads alone
            while chunk := await upload.read(CHUNK):
                if size == 0:
                    container = sniff(chunk[:512])
                    if container is None:
                        raise UploadRejected(415, "unsupported_media_type",
                                             f"{name}: not a video container (content sniffed before decoding)")
                size += len(chunk)
                if size > max_bytes:
                    raise UploadRejected(413, "too_large", f"{name}: upload exceeds {max_bytes} bytes")
                digest.update(chunk)
                out.write(chunk)
            if size == 0:
                raise UploadRejected(400, "empty_file", f"{name}: empty upload")
            out.flush()
            part.rename(dest)  # still under the lock: a sweep never sees a half-renamed file
    except OSError as exc:
        part.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UploadRejected(507, "storage_full", f"{name}: the server's upload folder is full") from None
        raise
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return SavedUpload(dest, name, digest.hexdigest(), size, container or "")


def sweep_partial(folder: Path, min_age_s: float = 2.0) -> int:
    """Remove the `.part` files of uploads whose writer died (no one holds their lock); returns how many.
    Files younger than `min_age_s` are left alone: their writer may not hold its lock yet."""
    removed = 0
    if not folder.is_dir():
        return 0
    now = time.time()
    for path in folder.glob(f"*{PARTIAL}"):
        try:
            if now - path.stat().st_mtime < min_age_s:
                continue
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live upload
        finally:
            os.close(fd)  # closing releases the lock we may have taken
        path.unlink(missing_ok=True)
        removed += 1
    if removed:
        log.info("removed %d partial upload(s) left by a process that died mid-upload", removed)
    return removed
