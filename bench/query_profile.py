"""Where a query's time goes: `python -m bench.query_profile [--sizes 10000,100000]`.

On the synthetic collections of `bench/search_scale.py` (60-s videos built from real features), with
the default engine, one 60-frame query at a time: the engine's own stage timings (coarse FAISS search,
loading candidate features, re-rank, segments), then the re-rank split into its parts, each timed
alone on the same candidates: the attended frame-to-frame products, the comparator CNN, the plain
(unit) frame-to-frame products and the Chamfer score of the Chamfer share. Then the default on a
2-minute query (the issue's bound for long queries: p95 <= 1 s). Medians and p95 over the queries.
`--keep DIR` builds each collection once and reuses it (a 100k build takes ~9 minutes).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import engine_config, publish, table
from bench.search_scale import FRAMES, POOL, collection, near_copy
from indexer.engine import Engine
from config.settings import Settings


def parts(engine: Engine, query: torch.Tensor, targets: list[torch.Tensor]) -> dict[str, float]:
    """The re-rank's parts on these candidates, each timed alone (ms)."""
    net = engine.network
    work = net.compute_dtype
    out = {}
    product_cells, score_cells = net._cells(query.device, None)
    with torch.inference_mode():
        t = time.perf_counter()
        f2f = net._batched_f2f(query.to(work), targets, product_cells)
        out["attended S^F" if net.learned else "S^F"] = time.perf_counter() - t
        t = time.perf_counter()
        net._video_scores(f2f, len(query), net.video_score, score_cells, query.device)
        out["comparator" if net.uses_comparator else "video score"] = time.perf_counter() - t
        if net.learned and net.chamfer_mix:
            t = time.perf_counter()
            plain = net._plain_f2f(query, targets, product_cells)
            out["plain S^F (Chamfer share)"] = time.perf_counter() - t
            t = time.perf_counter()
            net._video_scores(plain, len(query), net._chamfer_score, score_cells, query.device)
            out["Chamfer score"] = time.perf_counter() - t
    return {k: v * 1000 for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", type=Path, help="build each collection once in this folder and reuse it")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = Path(tempfile.mkdtemp(prefix="hapvr-profile-"))
    rows, configs = [], set()
    try:
        version = Engine(Settings(data=work / "real")).model_version
        for n in (int(s) for s in args.sizes.split(",")):
            root, _ = collection(work, n, version, args.keep)
            pool = sorted((root / "features").glob("*.npy"))[:POOL]
            # the full re-rank and the default cascade on a 60-s query, and the default on a 2-minute one
            default = Settings().rerank_cascade
            for cascade, seconds in ((0, FRAMES), (default, FRAMES), (default, 2 * FRAMES)):
                engine = Engine(Settings(data=root, rerank_cascade=cascade))
                engine.coarse  # FAISS loaded before timing
                configs.add(engine_config(engine))
                rng = np.random.default_rng(1)
                stages: dict[str, list[float]] = {}
                for q in range(args.queries + 2):
                    base = torch.from_numpy(np.load(pool[rng.integers(len(pool))]).astype(np.float32))
                    query = near_copy(base)
                    if seconds > FRAMES:  # a near copy of one indexed video, then of another
                        other = np.load(pool[rng.integers(len(pool))]).astype(np.float32)
                        query = torch.cat([query, near_copy(torch.from_numpy(other))])[:seconds]
                    start = time.perf_counter()
                    result = engine.search(query, np.arange(len(query), dtype=np.float32), float(len(query)),
                                           top_k=10, mirrored=query.flip(-1))
                    total = (time.perf_counter() - start) * 1000
                    if q < 2:  # warm-up
                        continue
                    for k, v in result["timings_ms"].items():
                        stages.setdefault(k, []).append(v)
                    stages.setdefault("total", []).append(total)
                    if cascade == 0:  # the parts of the full re-rank, on as many candidates
                        picks = rng.choice(len(pool), size=engine.settings.candidates, replace=False)
                        targets = [torch.from_numpy(np.load(pool[i], mmap_mode="r")) for i in picks]
                        for k, v in parts(engine, query, targets).items():
                            stages.setdefault(f"re-rank part: {k}", []).append(v)
                label = f"cascade {cascade}" if cascade else "no cascade"
                if cascade == default:
                    label += " (the default)"
                for k, v in stages.items():
                    rows.append([f"{n:,}", seconds, label, k, round(float(np.median(v)), 1),
                                 round(float(np.percentile(v, 95)), 1)])
                    print(rows[-1], flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    body = table(["videos (60 s)", "query s (1 frame/s)", "re-rank", "stage", "median ms", "p95 ms"], rows)
    body += (f"\n\nEngine: {'; '.join(sorted(configs))}. A 60-frame query (and a 120-frame one: near copies of "
             "two indexed videos, one after the other) with its mirrored view against the synthetic "
             "collections of `bench/search_scale.py`; the stages are `Engine.search`'s own timings; each re-rank "
             "part is timed alone on the same number of candidates (one orientation).")
    publish("profile", "Where a query's time goes", "python -m bench.query_profile", body, print_only=args.no_write)


if __name__ == "__main__":
    main()
