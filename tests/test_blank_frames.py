"""Blank frames are no evidence of copying: a black clip must not match a film with a black intro.

Every black frame embeds alike, so without suppression a 2-second black clip "matches" any video that
opens or fades to black. Real clips decoded with PyAV; the same collection indexed twice, with blank
frames left out (the default) and kept (`blank_frame_std=0`), shows the bug and its fix side by side.
"""
from __future__ import annotations

import numpy as np
import pytest

from bench import videoedit as ve
from indexer.engine import Engine
from model.preprocess import informative_frames
from tests.clips import ASL, BIKES, BOTTLE, clip
from tests.test_engine import make_settings

INTRO_S = 4  # the film's black intro


def black(seconds: float, fps: float, like: np.ndarray) -> list[np.ndarray]:
    return [np.zeros_like(like) for _ in range(round(seconds * fps))]


@pytest.fixture(scope="module")
def films(tmp_path_factory):
    """A film that opens with 4 s of black (BIKES after a black intro), a 2 s black clip, and a query
    that is a black second followed by BOTTLE's 20-30 s excerpt."""
    out = tmp_path_factory.mktemp("blank")
    bikes = ve.read_clip(clip(BIKES), max_side=480)
    film = ve.write_clip(ve.Clip(black(INTRO_S, bikes.fps, bikes.frames[0]) + bikes.frames, bikes.fps),
                         out / "film_with_black_intro.mp4")
    black_clip = ve.write_clip(ve.Clip(black(2, 25, np.zeros((360, 640, 3), np.uint8)), 25), out / "black.mp4")
    bottle = ve.excerpt(ve.read_clip(clip(BOTTLE), max_side=480), 20, 30)
    faded = ve.write_clip(ve.Clip(black(1, bottle.fps, bottle.frames[0]) + bottle.frames, bottle.fps),
                          out / "black_then_bottle.mp4")
    return {"film": film, "black": black_clip, "faded": faded}


def collection(tmp_path_factory, films, name: str, **settings) -> Engine:
    engine = Engine(make_settings(tmp_path_factory.mktemp(name), **settings))
    for path in (films["film"], clip(BOTTLE), clip(ASL)):
        engine.index(path)
    engine.save()
    return engine


@pytest.fixture(scope="module")
def suppressed(tmp_path_factory, films):
    return collection(tmp_path_factory, films, "suppressed")


@pytest.fixture(scope="module")
def kept(tmp_path_factory, films):
    return collection(tmp_path_factory, films, "kept", blank_frame_std=0)


def test_the_measure_tells_black_and_flat_frames_from_dark_scenes(films):
    frames = np.stack(ve.read_clip(films["film"], max_side=176, fps=1).frames)
    flags = informative_frames(frames, 5.0)
    assert not flags[:INTRO_S].any(), "decoded black (with codec noise) is blank"
    assert flags[INTRO_S + 1:].all(), "every frame of the cyclists is content"
    grey = np.full((2, 64, 64, 3), 128, np.uint8)
    assert not informative_frames(grey, 5.0).any()
    # a dark, low-contrast scene is content: the darkest demo clip, night road traffic
    dark = np.stack(ve.read_clip(clip("intel__preview_car-detection.mp4"), max_side=176, fps=1).frames)
    assert informative_frames(dark, 5.0).all()
    assert informative_frames(grey, 0).all(), "0 keeps every frame"


def test_blank_frames_are_not_indexed_and_the_timeline_is_kept(suppressed, kept):
    film = next(r for r in suppressed.store.list() if r.source.endswith("film_with_black_intro.mp4"))
    film_kept = next(r for r in kept.store.list() if r.source.endswith("film_with_black_intro.mp4"))
    assert len(film_kept.timestamps) - len(film.timestamps) >= INTRO_S - 1
    assert film.timestamps[0] >= INTRO_S - 1, film.timestamps[:3]
    assert np.allclose(film.timestamps, film_kept.timestamps[-len(film.timestamps):])


def test_a_black_clip_matches_nothing(suppressed, kept, films):
    # the bug, with blank frames kept: the black clip's top hit is the film, on its black intro
    bug = kept.query(films["black"], top_k=3)["results"]
    assert bug and bug[0]["source"].endswith("film_with_black_intro.mp4") and bug[0]["segments"]
    fixed = suppressed.query(films["black"], top_k=3)
    assert fixed["results"] == [] and fixed["note"] == Engine.BLANK_QUERY


def test_the_film_is_still_found_after_its_intro(suppressed, kept, films, tmp_path):
    # its own cyclists, without the intro: found first, the segment placed after the black intro
    bikes = ve.write_clip(ve.read_clip(clip(BIKES), max_side=320), tmp_path / "bikes.mp4", crf=30)
    for engine in (suppressed, kept):
        top = engine.query(bikes, top_k=1)["results"][0]
        assert top["source"].endswith("film_with_black_intro.mp4")
        assert top["segments"] and top["segments"][0]["target_start"] >= INTRO_S - 1
    # and it stays a clear copy: far above the unrelated clips (which sit near 0.48)
    first, *others = suppressed.query(bikes, top_k=3)["results"]
    assert all(first["score"] - other["score"] >= 0.15 for other in others), (first, others)


def test_a_query_that_opens_black_finds_its_source_on_the_content(suppressed, films):
    top = suppressed.query(films["faded"], top_k=3)["results"][0]
    assert top["source"].endswith(BOTTLE)
    segment = top["segments"][0]
    # the black second is no part of the match: the span starts half a sampling step (1 s) before the first
    # frame of content, the unbiased estimate of a boundary between two samples
    assert segment["query_start"] >= 0.5, segment
    assert 18 <= segment["target_start"] <= 22, segment
