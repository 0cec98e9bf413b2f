"""Shared fixtures: real clips from ../shared/videos and one encoder per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_VIDEOS = Path(os.environ.get("HAPVR_SHARED_VIDEOS", ROOT.parent / "shared" / "videos" / "permissive"))
DEMO_VIDEOS = ROOT / "demo" / "videos"


def clip(name: str) -> Path:
    """A real clip: from ../shared/videos when present, else the committed demo copies."""
    for folder in (SHARED_VIDEOS, DEMO_VIDEOS):
        path = folder / name
        if path.is_file():
            return path
    pytest.skip(f"test clip {name} not available")


@pytest.fixture(scope="session")
def encoder(tmp_path_factory):
    from model.encoder import EncoderConfig, FrameEncoder

    cache = Path(os.environ.get("HAPVR_CACHE_DIR", tmp_path_factory.mktemp("cache")))
    return FrameEncoder(EncoderConfig(), device="cpu", cache_dir=cache)
