"""Which sections of docs/BENCHMARKS.md no longer describe the default engine: `python -m bench.stale`.

A benchmark whose numbers move with the engine's defaults (checkpoint, head and Chamfer share, encoder
precision, frame size, candidates, cascade) writes the configuration it measured into its section as
`Engine: <bench.report.engine_config>`. This module compares that with the configuration this checkout
builds by default. A section of `DEPENDS` is stale when it does not name today's default.

- `python -m bench.stale` lists the stale sections with their rerun commands (exit 1 if any);
- `--mark` writes a visible warning into each stale section and marks the rows of the targets table
  that cite it; rerunning a benchmark rewrites its section, which drops the warning;
- `--rerun` runs the stale sections' own `Rerun:` commands (what `make bench-stale` does).

`tests/test_bench_stale.py` fails when a stale section or target row is not marked, so a change of default
cannot leave old numbers looking current.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.report import DOC

# sections whose numbers depend on the default engine (the others measure one component under stated
# settings: the encoders, decoding, frame sizes, training, the fuzzers)
DEPENDS = ("load", "indexing", "scale", "profile", "copies", "soak", "segments", "calibration", "duplicates",
           "scale-milvus", "keyframes")
SECTION = re.compile(r"<!-- bench:([\w-]+) -->(.*?)<!-- /bench:\1 -->", re.S)
MARK = "> **Stale:**"
TARGETS = re.compile(r"(## Targets at a glance\n.*?)(?=\n<!-- bench:|\n## )", re.S)


def default_config() -> str:
    """`engine_config` of the engine this checkout builds with no HAPVR_ variables set."""
    from config.settings import Settings
    from bench.report import engine_config
    from indexer.engine import Engine

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HAPVR_")}
    try:
        with tempfile.TemporaryDirectory(prefix="hapvr-stale-") as tmp:
            return engine_config(Engine(Settings(data=Path(tmp))))
    finally:
        os.environ.update(saved)


def sections(text: str) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in SECTION.finditer(text)}


def stale(text: str, config: str) -> list[str]:
    """The sections of `DEPENDS` present in `text` that do not name `config` (or name no engine at all)."""
    have = sections(text)
    measured = {n: "\n".join(l for l in body.splitlines() if not l.startswith(MARK)) for n, body in have.items()}
    return [name for name in DEPENDS if name in have and config not in measured[name]]


def rerun_command(body: str) -> str:
    found = re.search(r"Rerun: `([^`]+)`", body)
    return found.group(1) if found else ""


def runnable(command: str) -> list[str]:
    """A Rerun command as arguments for this interpreter. An option given a placeholder (`--vcsl PATH`)
    takes its value from `HAPVR_<OPTION>` (HAPVR_VCSL) and is left out when that is unset."""
    words, out = shlex.split(command)[1:], [sys.executable]
    i = 0
    while i < len(words):
        if i + 1 < len(words) and words[i].startswith("--") and words[i + 1].isupper():
            value = os.environ.get("HAPVR_" + words[i][2:].upper().replace("-", "_"))
            out += [words[i], value] if value else []
            i += 2
            continue
        out.append(words[i])
        i += 1
    return out


def cells(line: str) -> list[str]:
    """The cells of one markdown table row."""
    return [c.strip() for c in line.strip().strip("|").split("|")]


def target_rows(text: str) -> list[tuple[str, list[str]]]:
    """(row, the sections it cites) for each data row of the targets table (target | measured | status |
    sections): the last cell names them."""
    block = TARGETS.search(text)
    rows = []
    for line in (block.group(1).splitlines() if block else []):
        if line.startswith("| ") and not line.startswith("| target "):
            rows.append((line, re.findall(r"`([\w-]+)`", cells(line)[-1])))
    return rows


def mark(text: str, config: str) -> str:
    """The text with a warning in each stale section (after its Machine line) and in its target rows."""
    names = set(stale(text, config))

    def warn(m: re.Match) -> str:
        name, body = m.group(1), m.group(2)
        if name not in names or MARK in body:
            return m.group(0)
        note = (f"{MARK} this section does not name today's default engine ({config}) as the one it "
                f"measured; rerun `{rerun_command(body)}`.\n")
        body = re.sub(r"(Machine: [^\n]*\n)", lambda mm: mm.group(1) + "\n" + note, body, count=1)
        return f"<!-- bench:{name} -->{body}<!-- /bench:{name} -->"

    text = SECTION.sub(warn, text)
    for line, cited in target_rows(text):
        if names & set(cited) and "**stale**" not in line:
            row = cells(line)
            row[2] = f"**stale** ({', '.join(sorted(names & set(cited)))}); {row[2]}"  # the status cell
            text = text.replace(line, "| " + " | ".join(row) + " |", 1)
    return text


def unmarked(text: str, config: str) -> list[str]:
    """What `--mark` would still change: stale sections without the warning, target rows citing them."""
    have, names = sections(text), set(stale(text, config))
    out = [f"section {n}" for n in sorted(names) if MARK not in have[n]]
    out += [line for line, cited in target_rows(text) if names & set(cited) and "**stale**" not in line]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mark", action="store_true", help="write the stale warnings into docs/BENCHMARKS.md")
    parser.add_argument("--rerun", action="store_true", help="run each stale section's Rerun command")
    args = parser.parse_args()
    text, config = DOC.read_text(), default_config()
    names, have = stale(text, config), sections(text)
    commands = {name: rerun_command(have[name]) for name in names}
    print(f"default engine: {config}")
    for name in names:
        print(f"stale: {name}: rerun `{commands[name] or 'its benchmark'}`")
    if args.mark:
        DOC.write_text(mark(text, config))
    if args.rerun:
        for name in names:
            command = commands[name]
            if command.startswith("python "):
                subprocess.run(runnable(command), check=True)
            else:
                print(f"{name}: run `{command}` yourself")
    sys.exit(1 if names and not args.rerun else 0)


if __name__ == "__main__":
    main()
