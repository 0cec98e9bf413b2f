"""Streaming uploads to disk with a size limit, content sniffing and a running sha256."""
from __future__ import annotations

import hashlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

from fastapi import UploadFile

from indexer.decode import sniff

CHUNK = 1 << 20


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
    first bytes are not a video container, 413 as soon as the limit is passed."""
    folder.mkdir(parents=True, exist_ok=True)
    name = safe_name(upload.filename)
    dest = folder / f"{uuid.uuid4().hex}-{name}"
    digest = hashlib.sha256()
    size = 0
    container = None
    try:
        with open(dest, "wb") as out:
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
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return SavedUpload(dest, name, digest.hexdigest(), size, container or "")
