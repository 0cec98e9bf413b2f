"""Which catalog and feature store a process uses, from one URL setting each (config/settings.py):

    HAPVR_CATALOG    unset: SQLite in HAPVR_DATA; postgresql://user:password@host:5432/db
    HAPVR_FEATURES   unset: files in HAPVR_DATA/features; s3://bucket/prefix (HAPVR_S3_ENDPOINT for a
                     server other than AWS; credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, ...)
    HAPVR_VECTORS    unset: FAISS in HAPVR_DATA/faiss; milvus://host:19530/collection, or a file path for
                     milvus-lite (one process)

A backend that cannot be reached or is misconfigured fails here, when the store opens, with one line
(InputError `backend_unavailable`), never half-way through a job.
"""
from __future__ import annotations

from pathlib import Path

from indexer.contracts import Catalog, FeatureStore, VectorIndex
from indexer.errors import InputError
from indexer.media import open_media
from indexer.store import Store


def open_catalog(url: str, data: Path, model_version: str | None) -> Catalog:
    if not url:
        from indexer.catalog import SqliteCatalog

        return SqliteCatalog(data, model_version)
    if url.startswith(("postgresql://", "postgres://")):
        from indexer.catalog_postgres import PostgresCatalog

        return PostgresCatalog(url, model_version)
    raise InputError("backend_unavailable", f"HAPVR_CATALOG={url.split('@')[-1]!r}: expected a postgresql:// URL "
                                            "or nothing (SQLite in the data folder)")


def open_features(url: str, data: Path, s3_endpoint: str | None = None, cache_mb: int = 512) -> FeatureStore:
    if not url:
        from indexer.features import LocalFeatures

        return LocalFeatures(data / "features")
    if url.startswith("s3://"):
        from indexer.features_s3 import S3Features

        return S3Features(url, endpoint=s3_endpoint, cache_bytes=cache_mb << 20)
    raise InputError("backend_unavailable", f"HAPVR_FEATURES={url!r}: expected an s3://bucket/prefix URL or "
                                            "nothing (files in the data folder)")


def open_vectors(settings, store: Store) -> VectorIndex:
    """The coarse stage's index: FAISS in the data folder, or Milvus (a milvus:// URL, or a file path for
    milvus-lite). A collection of another dimension fails here."""
    dims = settings.encoder_config().dims
    url = settings.vectors
    if not url:
        from indexer.coarse import CoarseIndex

        return CoarseIndex(store, dims=dims, ivf_threshold=settings.ivf_threshold, nprobe=settings.nprobe)
    from indexer.vectors_milvus import MilvusIndex

    return MilvusIndex(url, store, dims=dims)


def open_store(settings, data: Path, model_version: str | None) -> Store:
    """The store the settings name, for `model_version` (None: whatever the catalog holds, for work that
    loads no model). The features open first: a missing bucket fails before any table is created."""
    features = open_features(settings.features, data, settings.s3_endpoint or None, settings.feature_cache_mb)
    catalog = open_catalog(settings.catalog, data, model_version)
    return Store(data, model_version, catalog=catalog, features=features, media=open_media(settings, data))


def open_existing(settings, data: Path) -> Store:
    """An existing collection whatever its model (`hapvr list`, `hapvr delete`); with the embedded catalog a
    folder without one is refused (InputError no_store) instead of being created."""
    if not settings.catalog and not Store.exists(data):
        raise InputError("no_store", f"{data}: no index here")
    return open_store(settings, data, None)
