"""Shared fixtures: the demo clips and clips made from them (tests/clips.py), one encoder per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.clips import ROOT

#: the shared collection, for the few tests that check the copy benchmark's split of it (bench/copies)
SHARED_VIDEOS = Path(os.environ.get("HAPVR_SHARED_VIDEOS", ROOT.parent / "shared" / "videos"))
needs_shared = pytest.mark.skipif(not (SHARED_VIDEOS / "manifest.json").is_file(),
                                  reason=f"needs the shared clip collection at {SHARED_VIDEOS} "
                                         "(set HAPVR_SHARED_VIDEOS to its folder)")


@pytest.fixture(scope="session")
def encoder(tmp_path_factory):
    from model.encoder import EncoderConfig, FrameEncoder

    cache = Path(os.environ.get("HAPVR_CACHE_DIR", tmp_path_factory.mktemp("cache")))
    return FrameEncoder(EncoderConfig(), device="cpu", cache_dir=cache)


@pytest.fixture(scope="session")
def made(tmp_path_factory) -> Path:
    """A folder for clips made from the demo clips (tests/clips.py: variant, long_clip, padded)."""
    return tmp_path_factory.mktemp("made-clips")


def pytest_terminal_summary(terminalreporter):
    """Say it in one line when the shared-collection tests did not run, and how to run them."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "shared clip collection" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} test(s) of the copy benchmark's split skipped: no shared clip "
                                    f"collection at {SHARED_VIDEOS} (HAPVR_SHARED_VIDEOS)", yellow=True)
