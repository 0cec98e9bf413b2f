"""Fuzz the decoder with mutated real files: `python -m bench.fuzz_decode [--inputs 10000]`.

Each input is a demo clip (or a clip made from one) after a seeded mutation: flipped bytes, a run of
random bytes, a truncation, a duplicated or deleted span, or an edit of a header field (MP4 box sizes,
Matroska element sizes, frame sizes and rates). It goes through what the engine runs on an upload:
`probe`, then `iter_frames` to the end. The contract: every input ends in a clean `InputError` or a
valid result; none crashes the process, none takes over `--timeout` seconds, and memory stays bounded.

The inputs run in a child process that reports each outcome on a pipe, so a crash (a signal in FFmpeg)
is caught, blamed on its input, and the child is restarted; a child past its time or memory is killed
the same way. `--write` puts the table into docs/RELIABILITY.md; the unit suite runs a few hundred
inputs (tests/test_fuzz.py).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import select
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "demo" / "videos"
#: address-space cap of the child (bytes): a decoder that tries to allocate a bomb's frames fails instead
MEMORY_CAP = 3 * 1024**3


def seeds() -> list[Path]:
    """The real files mutated: every demo clip (MP4/H.264 and Matroska)."""
    return sorted(p for p in DEMO.iterdir() if p.suffix in (".mp4", ".mkv"))


# ----- mutations (each a pure function of the input bytes and a seeded generator)
def flip_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    for pos in rng.integers(0, len(out), size=int(rng.integers(1, 64))):
        out[pos] ^= 1 << int(rng.integers(0, 8))
    return bytes(out)


def random_run(data: bytes, rng: np.random.Generator) -> bytes:
    out = bytearray(data)
    start = int(rng.integers(0, len(out)))
    n = int(rng.integers(1, 4096))
    out[start : start + n] = rng.integers(0, 256, size=min(n, len(out) - start), dtype=np.uint8).tobytes()
    return bytes(out)


def truncate(data: bytes, rng: np.random.Generator) -> bytes:
    return data[: int(rng.integers(1, len(data)))]


def splice(data: bytes, rng: np.random.Generator) -> bytes:
    a, b = sorted(int(x) for x in rng.integers(0, len(data), size=2))
    if rng.random() < 0.5:
        return data[:a] + data[b:]  # a span deleted
    return data[:b] + data[a:b] + data[b:]  # a span duplicated


def header_edit(data: bytes, rng: np.random.Generator) -> bytes:
    """Overwrite a 32-bit field in the first 64 KiB (where box sizes, dimensions and time scales live)
    with an extreme value, or a known box's size with a lie."""
    out = bytearray(data)
    boxes = [i - 4 for tag in (b"moov", b"trak", b"mdhd", b"tkhd", b"stsz", b"stts", b"avcC", b"mvhd")
             if (i := data.find(tag, 0, 65536)) >= 4]
    values = [0, 1, 0x7FFFFFFF, 0xFFFFFFFF, 16000, 0x10000, int(rng.integers(0, 2**32))]
    value = values[int(rng.integers(0, len(values)))]
    if boxes and rng.random() < 0.5:
        pos = boxes[int(rng.integers(0, len(boxes)))]
    else:
        pos = int(rng.integers(0, max(1, min(len(out), 65536) - 4)))
    out[pos : pos + 4] = struct.pack(">I", value)
    return bytes(out)


MUTATIONS = {"flip": flip_bytes, "random_run": random_run, "truncate": truncate, "splice": splice,
             "header": header_edit}


def mutate(index: int, seed: int, sources: list[Path]) -> tuple[str, str, bytes]:
    """Input number `index` of a run: (source name, mutation name, bytes), the same for the same seed."""
    rng = np.random.default_rng([seed, index])
    source = sources[index % len(sources)]
    name = list(MUTATIONS)[int(rng.integers(0, len(MUTATIONS)))]
    data = source.read_bytes()
    for _ in range(int(rng.integers(1, 3))):  # one or two mutations stacked
        data = MUTATIONS[name](data, rng)
    return source.name, name, data


# ----- the child: decode inputs as the engine does, one outcome line per input
def child(seed: int, first: int, last: int, folder: str) -> None:
    from indexer.decode import iter_frames, probe
    from indexer.errors import InputError

    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    sources = seeds()
    path = Path(folder) / f"input-{os.getpid()}"
    for index in range(first, last):
        source, mutation, data = mutate(index, seed, sources)
        path.write_bytes(data)
        start = time.perf_counter()
        try:
            info = probe(path)
            frames = sum(len(b.timestamps) for b in iter_frames(path, fps=1.0, size_for=lambda w, h: (176, 176),
                                                                    info=info))
            outcome = f"ok:{frames}"
        except InputError as exc:
            outcome = f"InputError:{exc.code}"
        except MemoryError:
            outcome = "bug:MemoryError"
        except Exception as exc:  # noqa: BLE001 - anything else is a bug of ours, reported
            outcome = f"bug:{type(exc).__name__}: {str(exc)[:200]}"
        elapsed = time.perf_counter() - start
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(json.dumps({"index": index, "source": source, "mutation": mutation, "outcome": outcome,
                          "seconds": round(elapsed, 3), "rss_mb": rss}), flush=True)
    path.unlink(missing_ok=True)


# ----- the parent: run children over the inputs, restart after a crash or a hang
def run(inputs: int, seed: int = 0, timeout: float = 10.0, log=None) -> dict:
    """Fuzz `inputs` inputs; returns counts by outcome, the slowest input, peak memory and every failure."""
    results: list[dict] = []
    failures: list[dict] = []
    next_index = 0
    with tempfile.TemporaryDirectory(prefix="hapvr-fuzz-") as folder:
        while next_index < inputs:
            proc = subprocess.Popen([sys.executable, "-m", "bench.fuzz_decode", "--child", str(seed), str(next_index),
                                     str(inputs), folder], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                    stdin=subprocess.DEVNULL)
            buffer, last_progress = "", time.monotonic()
            while True:
                ready, _, _ = select.select([proc.stdout], [], [], 0.05)
                chunk = os.read(proc.stdout.fileno(), 65536).decode() if ready else ""
                buffer += chunk
                while "\n" in buffer:
                    line, buffer = buffer.split("\n", 1)
                    record = json.loads(line)
                    results.append(record)
                    next_index = record["index"] + 1
                    last_progress = time.monotonic()
                    if record["outcome"].startswith("bug:") or record["seconds"] > timeout:
                        failures.append(record)
                    if log and len(results) % 500 == 0:
                        log(f"{len(results)} inputs")
                if ready and not chunk:  # end of file: the child is gone
                    proc.wait()
                    break
                if time.monotonic() - last_progress > timeout:  # a hang: kill, blame the input, go on
                    proc.kill()
                    proc.wait()
                    record = {"index": next_index, "outcome": "hang", "seconds": timeout}
                    record.update(dict(zip(("source", "mutation"), mutate(next_index, seed, seeds())[:2])))
                    results.append(record)
                    failures.append(record)
                    next_index += 1
                    break
            if proc.returncode not in (0, None) and next_index < inputs and proc.returncode != -9:
                source, mutation, _ = mutate(next_index, seed, seeds())
                record = {"index": next_index, "source": source, "mutation": mutation,
                          "outcome": f"crash:signal {-proc.returncode}" if proc.returncode < 0 else
                          f"crash:exit {proc.returncode}", "seconds": 0.0}
                results.append(record)
                failures.append(record)
                next_index += 1
    outcomes = Counter(r["outcome"].split(":")[0] if not r["outcome"].startswith("InputError")
                       else r["outcome"] for r in results)
    slowest = max(results, key=lambda r: r["seconds"]) if results else None
    return {"inputs": len(results), "outcomes": dict(outcomes), "failures": failures, "slowest": slowest,
            "peak_rss_mb": max((r.get("rss_mb", 0) for r in results), default=0),
            "by_mutation": dict(Counter(r["mutation"] for r in results))}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=10.0)
    parser.add_argument("--write", action="store_true", help="write the figures into docs/RELIABILITY.md")
    args = parser.parse_args()
    start = time.perf_counter()
    report = run(args.inputs, args.seed, args.timeout, log=lambda m: print(m, file=sys.stderr))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(report, indent=1))
    if args.write:
        from bench.reliability import write_figure

        slow = report["slowest"]
        write_figure("fuzz_decode", f"{report['inputs']} mutated inputs (seed {args.seed}) from the {len(seeds())} "
                     f"demo clips: {report['outcomes']}; {len(report['failures'])} crashes, hangs or other "
                     f"exceptions; slowest {slow['seconds']:.2f} s ({slow['mutation']} of {slow['source']}); "
                     f"child peak RSS {report['peak_rss_mb']} MB; {report['wall_s']:.0f} s wall")
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
