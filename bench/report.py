"""Print a table and write it into its own section of docs/BENCHMARKS.md.

Each benchmark owns one section delimited by HTML comments, so benchmarks can
be rerun independently without clobbering each other's numbers.
"""
from __future__ import annotations

import os
import platform
import re
from datetime import date
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "BENCHMARKS.md"
HEADER = "# Benchmarks\n\nEvery number here was measured by the command shown with it; rerun it to refresh its section.\n"


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{cpu}, {len(os.sched_getaffinity(0))} cores, {gpu}, torch {torch.__version__}, {date.today()}"


def engine_config(engine) -> str:
    """The engine configuration a number belongs to: model version (encoder, PCA and precision digests,
    similarity checkpoint digest), the head and Chamfer share, candidates and the re-rank cascade."""
    net, s = engine.network, engine.settings
    head = f"{net.mode}, Chamfer share {net.chamfer_mix:g}" if net.learned else "untrained Chamfer"
    cascade = f"cascade {s.rerank_cascade}" if net.learned and net.chamfer_mix and s.rerank_cascade else "no cascade"
    return f"`{engine.model_version}` ({head}; {s.candidates} candidates, {cascade})"


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (this one by default), MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def table(headers: list[str], rows: list[list[object]]) -> str:
    fmt = lambda v: (f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}") if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, title: str, command: str, body: str) -> None:
    """Replace (or append) section `name` of docs/BENCHMARKS.md and print it."""
    section = (f"<!-- bench:{name} -->\n## {title}\n\nMachine: {machine()}. Rerun: `{command}`\n\n"
               f"{body.strip()}\n<!-- /bench:{name} -->")
    print(section)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else HEADER
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    tmp = DOC.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(DOC)


def publish(name: str, title: str, command: str, body: str, print_only: bool = False) -> None:
    """What every benchmark ends with: print the body, or write it as section `name` of BENCHMARKS.md."""
    if print_only:
        print(body)
    else:
        write_section(name, title, command, body)
