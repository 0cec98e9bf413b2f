"""The media store (indexer/contracts.py `MediaStore`): key frames and kept source files, for the web UI.

Embedded default: `<data>/media/<video id>/<name>`, each blob written to a temporary name, fsynced and
renamed. Cluster mode: objects `<prefix>/<video id>/<name>` on S3-compatible storage (`media/` under an
S3 HAPVR_FEATURES prefix unless HAPVR_MEDIA names another place), written with one PUT each and read with
ranged GETs, so a player can seek without the API process holding the file.
"""
from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from indexer.s3client import beside_features, bucket_and_prefix, s3_client

#: blob names a front end may ask for (anything else is refused before it reaches a path or a key)
NAMES = ("keyframes.zip", "source")


def _checked(name: str) -> str:
    if name not in NAMES:
        raise ValueError(f"media name {name!r} is not one of {NAMES}")
    return name


class LocalMedia:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.location = str(self.folder)

    def _path(self, video_id: str, name: str) -> Path:
        return self.folder / video_id / _checked(name)

    def put(self, video_id: str, name: str, body: bytes) -> None:
        path = self._path(video_id, name)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_name(name + ".tmp")
        with open(tmp, "wb") as handle:
            handle.write(body)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)

    def put_file(self, video_id: str, name: str, path: Path) -> None:
        target = self._path(video_id, name)
        target.parent.mkdir(exist_ok=True)
        tmp = target.with_name(name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)  # the upload folder is on the same disk: a second name, no copy
        except OSError:
            shutil.copyfile(path, tmp)
        tmp.replace(target)

    def file(self, video_id: str, name: str) -> Path | None:
        """The blob's path on disk (the service answers Range requests on it directly), None without one."""
        path = self._path(video_id, name)
        return path if path.is_file() else None

    def size(self, video_id: str, name: str) -> int | None:
        path = self.file(video_id, name)
        return path.stat().st_size if path else None

    def read(self, video_id: str, name: str, start: int = 0, end: int | None = None) -> bytes:
        try:
            with open(self._path(video_id, name), "rb") as handle:
                handle.seek(start)
                return handle.read(-1 if end is None else max(0, end - start))
        except FileNotFoundError:
            raise KeyError((video_id, name)) from None

    def delete(self, video_id: str) -> None:
        shutil.rmtree(self.folder / video_id, ignore_errors=True)

    def list(self) -> Iterator[tuple[str, float]]:
        now = time.time()
        for entry in self.folder.iterdir():
            if entry.is_dir():
                stamps = [p.stat().st_mtime for p in entry.iterdir()] or [entry.stat().st_mtime]
                yield entry.name, now - max(stamps)


class S3Media:
    def __init__(self, url: str, endpoint: str | None = None, client=None):
        self.bucket, self.prefix = bucket_and_prefix(url, "media store")
        self.location = url
        self.client = client or s3_client(endpoint)

    def _key(self, video_id: str, name: str = "") -> str:
        tail = f"{video_id}/{_checked(name)}" if name else f"{video_id}/"
        return f"{self.prefix}/{tail}" if self.prefix else tail

    def put(self, video_id: str, name: str, body: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self._key(video_id, name), Body=body)

    def put_file(self, video_id: str, name: str, path: Path) -> None:
        self.client.upload_file(str(path), self.bucket, self._key(video_id, name))

    def file(self, video_id: str, name: str) -> Path | None:
        return None  # never on this disk: served by ranged reads

    def size(self, video_id: str, name: str) -> int | None:
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.bucket, Key=self._key(video_id, name))["ContentLength"])
        except ClientError:
            return None

    def read(self, video_id: str, name: str, start: int = 0, end: int | None = None) -> bytes:
        extra = {"Range": f"bytes={start}-{'' if end is None else end - 1}"} if start or end is not None else {}
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(video_id, name), **extra)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError((video_id, name)) from None

    def _objects(self, prefix: str) -> Iterator[dict]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            yield from page.get("Contents", ())

    def delete(self, video_id: str) -> None:
        for obj in list(self._objects(self._key(video_id))):
            self.client.delete_object(Bucket=self.bucket, Key=obj["Key"])

    def list(self) -> Iterator[tuple[str, float]]:
        now = datetime.now(timezone.utc)
        newest: dict[str, float] = {}
        base = f"{self.prefix}/" if self.prefix else ""
        for obj in self._objects(base):
            video_id = obj["Key"][len(base):].split("/", 1)[0]
            age = (now - obj["LastModified"]).total_seconds()
            newest[video_id] = min(age, newest.get(video_id, age))
        yield from newest.items()


def open_media(settings, data: Path):
    """HAPVR_MEDIA, or `media/` under an S3 feature store's prefix, else `<data>/media`."""
    url = beside_features(settings.media, settings.features, "media")
    if url.startswith("s3://"):
        return S3Media(url, settings.s3_endpoint or None)
    return LocalMedia(Path(url) if url else Path(data) / "media")
