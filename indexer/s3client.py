"""The one way this project builds an S3 client and reads an `s3://bucket/prefix` setting (the feature
store, the media store, and the service's upload staging)."""
from __future__ import annotations

from urllib.parse import urlsplit


def bucket_and_prefix(url: str, what: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://bucket/prefix`; InputError(backend_unavailable) naming `what` otherwise."""
    from indexer.errors import InputError

    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc:
        raise InputError("backend_unavailable", f"{what} {url!r}: expected s3://bucket/prefix")
    return parts.netloc, parts.path.strip("/")


def beside_features(explicit: str, features: str, folder: str) -> str:
    """Where a store lives: its own setting when given, else `folder/` under an S3 feature store's prefix,
    else "" (the data folder)."""
    if explicit:
        return explicit
    if features.startswith("s3://"):
        return features.rstrip("/") + "/" + folder
    return ""


def s3_client(endpoint: str | None = None):
    """A boto3 S3 client with bounded timeouts and standard retries, for every object-store user (features,
    uploads): credentials and region from the standard AWS variables."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint or None,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5,
                                      read_timeout=60))
