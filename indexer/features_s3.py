"""The feature store on S3-compatible object storage (boto3): cluster mode, where no process shares a disk
(`HAPVR_FEATURES=s3://bucket/prefix`, `HAPVR_S3_ENDPOINT` for MinIO, Ceph, moto or another non-AWS server,
credentials from the standard AWS variables).

One object per video, `<prefix>/<id>.npy`, written with a single PUT, which S3 makes visible whole or not
at all. Features never change once written, so re-rank reads go through a bounded in-process cache
(least recently used first out, by bytes) that can never be stale.
"""
from __future__ import annotations

import io
import threading
from collections import OrderedDict
from collections.abc import Iterator
from datetime import datetime, timezone

import numpy as np

from indexer.errors import InputError
from indexer.s3client import bucket_and_prefix, s3_client


class S3Features:
    def __init__(self, url: str, endpoint: str | None = None, cache_bytes: int = 512 << 20,
                 client=None):
        self.bucket, self.prefix = bucket_and_prefix(url, "feature store")
        self.location = url
        self.client = client or s3_client(endpoint)
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cached = 0
        self._mutex = threading.Lock()
        self._check_bucket()

    def _check_bucket(self) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "?")
            why = "no such bucket" if code in ("404", "NoSuchBucket") else f"error {code}"
            raise InputError("backend_unavailable", f"feature store {self.location}: {why}") from None
        except BotoCoreError as exc:
            raise InputError("backend_unavailable", f"feature store {self.location}: {exc}") from None

    def key(self, video_id: str) -> str:
        return f"{self.prefix}/{video_id}.npy" if self.prefix else f"{video_id}.npy"

    def put(self, video_id: str, features: np.ndarray) -> None:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(features, dtype=np.float16))
        self.client.put_object(Bucket=self.bucket, Key=self.key(video_id), Body=buffer.getvalue())

    def get(self, video_id: str) -> np.ndarray:
        with self._mutex:
            hit = self._cache.get(video_id)
            if hit is not None:
                self._cache.move_to_end(video_id)
                return hit
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key(video_id))["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise KeyError(video_id) from None
        array = np.load(io.BytesIO(body))
        with self._mutex:
            if video_id not in self._cache and array.nbytes <= self.cache_bytes:
                self._cache[video_id] = array
                self._cached += array.nbytes
                while self._cached > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._cached -= old.nbytes
        return array

    def delete(self, video_id: str) -> None:
        with self._mutex:
            old = self._cache.pop(video_id, None)
            if old is not None:
                self._cached -= old.nbytes
        self.client.delete_object(Bucket=self.bucket, Key=self.key(video_id))

    def _objects(self) -> Iterator[dict]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "")
        for page in pages:
            yield from page.get("Contents", ())

    def _name(self, key: str) -> str | None:
        """The video id an object key holds features of; None for other objects under the prefix (the
        uploads/ of service/staging.py)."""
        name = key[len(self.prefix) + 1 :] if self.prefix else key
        return name[: -len(".npy")] if name.endswith(".npy") and "/" not in name else None

    def list(self) -> Iterator[tuple[str, float]]:
        now = datetime.now(timezone.utc)
        for obj in self._objects():
            name = self._name(obj["Key"])
            if name is not None:
                yield name, (now - obj["LastModified"]).total_seconds()

    def size(self) -> int:
        return sum(obj["Size"] for obj in self._objects() if self._name(obj["Key"]) is not None)
