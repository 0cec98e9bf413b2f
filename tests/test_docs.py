"""The docs describe the product as it is, for a user with a clone: every setting is documented, and no
page narrates the project's history or points at files a clone does not have."""
from __future__ import annotations

import re

from config.settings import Settings
from tests.clips import ROOT

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: how history reads: work sessions and rounds, issue numbers, paths beside the checkout
HISTORY = re.compile(r"\b[Ss]ession \d|\b[Ss]essions? \d|\bwork round|\b[Rr]ound \d+\b|\(#\d+\)|\bissue #?\d+"
                     r"|\.\./shared/|\bthe (?:AMD|Intel|Xeon|EPYC)[\w -]* VM of\b")


def test_every_setting_is_in_the_configuration_page():
    page = (ROOT / "docs" / "CONFIG.md").read_text()
    missing = [name for name in Settings.model_fields if f"HAPVR_{name.upper()}" not in page]
    assert not missing, f"docs/CONFIG.md does not document {missing}"


def test_no_page_narrates_history_or_points_outside_the_clone():
    found = []
    for page in PAGES:
        for number, line in enumerate(page.read_text().splitlines(), 1):
            if line.startswith("Machine: "):  # a benchmark's machine and date of measurement
                continue
            for match in HISTORY.finditer(line):
                found.append(f"{page.relative_to(ROOT)}:{number}: {match.group(0)!r} in {line.strip()[:100]!r}")
    assert not found, "\n".join(found)
