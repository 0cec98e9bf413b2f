"""A benchmark section measured with an engine other than the default is visibly stale (bench/stale.py)."""
from __future__ import annotations

import sys

from bench.report import DOC
from bench.stale import MARK, default_config, mark, runnable, stale, unmarked

NOW = "`enc+sim:new` (learned, Chamfer share 0.5; 100 candidates, cascade 30)"
OLD = "`enc+sim:old` (learned, Chamfer share 0.5; 100 candidates, cascade 30)"


def doc(scale_engine: str) -> str:
    return ("# Benchmarks\n\n## Targets at a glance\n\n| target | measured | status | sections |\n|---|---|---|---|\n"
            "| latency | 300 ms | met | `scale` |\n| encoder | 600 f/s | met | `encoder` |\n\n"
            "<!-- bench:encoder -->\n## Encoder\n\nMachine: x. Rerun: `python -m bench.encoder_speed`\n\n| a |\n"
            "<!-- /bench:encoder -->\n\n"
            "<!-- bench:scale -->\n## Scale\n\nMachine: x. Rerun: `python -m bench.search_scale`\n\n| b |\n\n"
            f"Engine: {scale_engine}.\n<!-- /bench:scale -->\n")


def test_a_section_of_another_engine_is_stale_and_marking_shows_it_there_and_in_the_targets():
    current, old = doc(NOW), doc(OLD)
    assert stale(current, NOW) == [] and unmarked(current, NOW) == []
    assert stale(old, NOW) == ["scale"]  # the encoder section does not depend on the default engine
    assert unmarked(old, NOW) == ["section scale", "| latency | 300 ms | met | `scale` |"]
    marked = mark(old, NOW)
    assert unmarked(marked, NOW) == [] and mark(marked, NOW) == marked
    assert stale(marked, NOW) == ["scale"]  # the flag names today's engine but is not a measurement
    assert (f"{MARK} this section does not name today's default engine ({NOW}) as the one it measured; "
            "rerun `python -m bench.search_scale`") in marked
    assert "| latency | 300 ms | **stale** (scale); met | `scale` |" in marked
    assert "| encoder | 600 f/s | met | `encoder` |\n" in marked
    # a section naming a cascade other than today's is stale too
    assert stale(doc(NOW.replace("cascade 30", "no cascade")), NOW) == ["scale"]


def test_a_placeholder_option_takes_its_value_from_the_environment(monkeypatch):
    monkeypatch.delenv("HAPVR_VCSL", raising=False)
    assert runnable("python -m bench.copies.segments --vcsl PATH") == [sys.executable, "-m", "bench.copies.segments"]
    monkeypatch.setenv("HAPVR_VCSL", "/src/VCSL")
    assert runnable("python -m bench.copies.segments --vcsl PATH --no-write")[-3:] == ["--vcsl", "/src/VCSL",
                                                                                     "--no-write"]


def test_every_stale_section_of_the_benchmarks_page_is_marked():
    """Fails when a change of default leaves numbers looking current: rerun them (`make bench-stale`) or
    run `python -m bench.stale --mark`."""
    left = unmarked(DOC.read_text(), default_config())
    assert not left, "stale and not marked (python -m bench.stale):\n" + "\n".join(left)
