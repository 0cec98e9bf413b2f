"""Write one row's measured figures into docs/RELIABILITY.md.

The page is one table (what was tried, what held, the command); each bench run that measures a row
(`bench.fuzz_decode`, `bench.fuzz_api`, `bench.load_test`) replaces the figures between its own HTML
comments, so the runs refresh independently and the table is never edited by hand after a run.
"""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "RELIABILITY.md"


def write_figure(name: str, text: str) -> None:
    """Replace the figures of row `name` (between `<!-- fig:name -->` and `<!-- /fig:name -->`) and print them.

    The markers sit inside a table cell, so `text` is kept on one line; a page without the markers is an
    error (the row, its command and its claim are written by people, the figures by the run)."""
    text = " ".join(text.split()).replace("|", "/")
    print(f"{name}: {text}")
    page = DOC.read_text()
    pattern = re.compile(rf"<!-- fig:{re.escape(name)} -->.*?<!-- /fig:{re.escape(name)} -->", re.S)
    if not pattern.search(page):
        raise SystemExit(f"{DOC} has no <!-- fig:{name} --> row to fill")
    page = pattern.sub(lambda _: f"<!-- fig:{name} --> {text} <!-- /fig:{name} -->", page)
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text(page)
    tmp.replace(DOC)
