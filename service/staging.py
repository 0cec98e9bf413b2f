"""Where an uploaded video waits between the API that received it and the worker that decodes it.

Embedded default (`SharedFolder`): the upload stays in `<data>/uploads/`, a folder the API and its workers
share. Cluster mode (`S3Staging`, HAPVR_UPLOADS=s3://bucket/prefix, by default `uploads/` under the
HAPVR_FEATURES prefix): the API puts the validated file into the object store and the job names the
object; the worker that takes the job copies it to its own data folder. No process needs another's disk.

A job's upload is discarded once the job is final or cancelled (the object and any local copy); a worker
killed mid-job leaves the object in place for the worker the job is delivered to next.
"""
from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from indexer.s3client import beside_features, bucket_and_prefix, s3_client

log = logging.getLogger(__name__)


class Staging(Protocol):
    def publish(self, path: Path) -> str:
        """Make a validated upload reachable by any worker; returns what the job's payload names."""

    def fetch(self, ref: str) -> Path:
        """A local file with the upload's bytes, for the worker that runs its job."""

    def discard(self, payload: dict) -> None:
        """Remove a job's upload, if it has one (its job ended or was cancelled)."""


class SharedFolder:
    """Uploads stay where the API saved them, in the data folder its workers share."""

    def publish(self, path: Path) -> str:
        return str(path)

    def fetch(self, ref: str) -> Path:
        return Path(ref)

    def discard(self, payload: dict) -> None:
        upload = payload.get("upload")
        if upload:
            Path(upload).unlink(missing_ok=True)


class S3Staging:
    """Uploads as objects `<prefix>/<uuid>-<name>`; workers copy them into `<data>/uploads/`."""

    def __init__(self, url: str, local: Path, endpoint: str | None = None):
        self.bucket, self.prefix = bucket_and_prefix(url, "upload staging")
        self.local = local
        self.client = s3_client(endpoint)

    def _key(self, ref: str) -> str:
        parts = urlsplit(ref)
        if parts.scheme != "s3" or parts.netloc != self.bucket:
            raise ValueError(f"{ref!r} is not an upload of s3://{self.bucket}")
        return parts.path.lstrip("/")

    def _local(self, ref: str) -> Path:
        return self.local / Path(self._key(ref)).name

    def publish(self, path: Path) -> str:
        key = f"{self.prefix}/{path.name}" if self.prefix else path.name
        self.client.upload_file(str(path), self.bucket, key)
        path.unlink(missing_ok=True)
        return f"s3://{self.bucket}/{key}"

    def fetch(self, ref: str) -> Path:
        dest = self._local(ref)
        if dest.is_file():  # this worker fetched it before being stopped: the bytes are whole (renamed below)
            return dest
        self.local.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{uuid.uuid4().hex}.fetch")
        try:
            self.client.download_file(self.bucket, self._key(ref), str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def discard(self, payload: dict) -> None:
        upload = payload.get("upload")
        if not upload:
            return
        if not upload.startswith("s3://"):  # saved here and never published (a rejected or duplicate file)
            Path(upload).unlink(missing_ok=True)
            return
        self._local(upload).unlink(missing_ok=True)
        self.client.delete_object(Bucket=self.bucket, Key=self._key(upload))


def uploads_url(settings) -> str:
    """HAPVR_UPLOADS, or `uploads/` under the S3 feature store's prefix; "" for the shared folder."""
    return beside_features(settings.uploads, settings.features, "uploads")


def make_staging(settings) -> Staging:
    url = uploads_url(settings)
    if url.startswith("s3://"):
        return S3Staging(url, Path(settings.data) / "uploads", settings.s3_endpoint or None)
    return SharedFolder()
