"""The one way this project builds an S3 client (the feature store, and the service's upload staging)."""
from __future__ import annotations


def s3_client(endpoint: str | None = None):
    """A boto3 S3 client with bounded timeouts and standard retries, for every object-store user (features,
    uploads): credentials and region from the standard AWS variables."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint or None,
                        config=Config(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=5,
                                      read_timeout=60))
