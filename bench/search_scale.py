"""Query latency (excluding the query's own decode + embed) at 1k, 10k and 100k indexed 60-s videos.

Targets: p50 <= 300 ms and p95 <= 1 s at 100k, p50 <= 200 ms at 10k. Collections this
large cannot be decoded here, so they are synthetic, built from real features:
the 57 shared clips are embedded, and each synthetic video is 60 consecutive
real frames (tiled) passed through its own random orthogonal map (a signed
permutation of the 512 dimensions). That keeps the within-video statistics of
real features and makes unrelated videos as dissimilar as real unrelated ones.

Disk: features are stored for a pool of at most 2,000 synthetic videos and
the other rows hard-link to those files, so the re-ranker reads real files of
the right size (but the page cache holds them: a cold 100k store would read
~55 GB and be slower). FAISS holds every row's own descriptors. The numbers
measure latency and memory, not accuracy.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench.report import engine_config, publish, rss_mb, table
from bench.samples import SHARED
from indexer.coarse import CoarseIndex, build_ivf, frame_descriptors, pack_ids
from indexer.engine import Engine
from config.settings import Settings

FRAMES = 60
POOL = 2000


def real_features(work: Path) -> list[np.ndarray]:
    engine = Engine(Settings(data=work / "real"))
    out = []
    for path in sorted(p for p in SHARED.iterdir() if p.is_file()):
        out.append(engine.embed(path).features.numpy())
    return out


def synthetic(real: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    src = real[rng.integers(len(real))]
    idx = (rng.integers(len(src)) + np.arange(FRAMES)) % len(src)
    perm = rng.permutation(512)
    sign = rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=512)
    return (src[idx][..., perm] * sign).astype(np.float16)


def build(root: Path, n: int, real: list[np.ndarray], model_version: str, rng: np.random.Generator,
          milvus: Path | None = None) -> None:
    """Rows straight into SQLite, features hard-linked from a pool, FAISS built in one go (and, with
    `milvus`, a milvus-lite file holding the same descriptors)."""
    from indexer.store import Store

    store = Store(root, model_version)
    coarse = CoarseIndex(store, ivf_threshold=10**12)  # created while the store is empty: nothing to sync
    pool_files: list[Path] = []
    descriptors = np.zeros((n * FRAMES, 512), dtype=np.float32)
    ids = np.zeros(n * FRAMES, dtype=np.int64)
    rows = []
    stamps = np.arange(FRAMES, dtype=np.float32).tobytes()
    for i in range(n):
        seq = i + 1
        feats = synthetic(real, rng)
        vid = f"syn{seq:08d}"
        path = store.features.path(vid)
        if i < POOL:
            np.save(path, feats)
            pool_files.append(path)
        else:
            os.link(pool_files[i % POOL], path)
        descriptors[i * FRAMES : (i + 1) * FRAMES] = frame_descriptors(feats)
        ids[i * FRAMES : (i + 1) * FRAMES] = pack_ids(seq, FRAMES)
        rows.append((seq, vid, f"synthetic/{vid}.mp4", None, f"{seq:064x}", 60.0, 1.0, 640, 360, "h264", FRAMES,
                     stamps, model_version, "{}", time.time()))
    store.catalog.db.execute("BEGIN")
    store.catalog.db.executemany("INSERT INTO videos VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    store.catalog.db.execute("COMMIT")
    if len(descriptors) > Settings().ivf_threshold:
        coarse.index = build_ivf(descriptors, ids, 512)
        coarse.max_seq, coarse.dirty = n, True
    else:
        coarse.add_vectors(descriptors, ids, n)
    coarse.save()
    if milvus is not None:
        from indexer.vectors_milvus import MilvusIndex

        start = time.perf_counter()
        MilvusIndex(str(milvus), store, dims=512).add_vectors(descriptors, ids, n)
        print(f"milvus-lite: {len(ids)} vectors inserted in {time.perf_counter() - start:.0f} s", flush=True)
    store.close()


def milvus_file(root: Path) -> Path:
    """The milvus-lite file that holds a collection's descriptors (`build(..., milvus=...)`), beside it."""
    return root.parent / f"{root.name}-vectors.db"


def collection(work: Path, n: int, version: str, keep: Path | None = None, milvus: bool = False) -> tuple[Path, float]:
    """The synthetic `n`-video collection and how long it took to build (s). With `keep`, it is built once
    under that folder (for this model version) and reused by later runs: a 100k build takes ~9 minutes."""
    base = work if keep is None else keep / hashlib.sha256(version.encode()).hexdigest()[:12]
    root = base / f"n{n}"
    marker = base / f"n{n}.built"
    if keep is not None and marker.exists() and (not milvus or milvus_file(root).exists()):
        return root, float(marker.read_text())
    shutil.rmtree(root, ignore_errors=True)
    real_cache = base / "real.npz"
    if real_cache.exists():
        real = list(np.load(real_cache).values())
    else:
        real = real_features(work)
        base.mkdir(parents=True, exist_ok=True)
        np.savez(real_cache, *real)  # embedded once per run (or once per --keep folder)
    start = time.perf_counter()
    build(root, n, real, version, np.random.default_rng(n), milvus=milvus_file(root) if milvus else None)
    build_s = time.perf_counter() - start
    if keep is not None:
        marker.write_text(f"{build_s:.1f}")
    return root, build_s


def near_copy(base: torch.Tensor) -> torch.Tensor:
    """A query close to an indexed video: each region vector rescaled and perturbed a little."""
    return base * (1 + 0.05 * torch.randn(base.shape[:-1] + (1,))) + 0.01 * torch.randn(base.shape)


def measure(root: Path, queries: int, rng: np.random.Generator, flip: bool, cascade: int | None = None,
            vectors: str = "") -> dict:
    """Latency of `queries` searches (after two warm-up ones), and the median of each stage."""
    overrides = {} if cascade is None else {"rerank_cascade": cascade}
    overrides["vectors"] = vectors
    engine = Engine(Settings(data=root, query_flip=flip, **overrides))
    engine.coarse  # load FAISS before timing
    rss = rss_mb()
    latencies, stages = [], {}
    feats_pool = sorted((root / "features").glob("*.npy"))[:POOL]
    for q in range(queries + 2):
        base = torch.from_numpy(np.load(feats_pool[rng.integers(len(feats_pool))]).astype(np.float32))
        query = near_copy(base)
        mirrored = query.flip(-1) if flip else None  # stands in for the mirrored query's features
        start = time.perf_counter()
        result = engine.search(query, np.arange(FRAMES, dtype=np.float32), 60.0, top_k=10, mirrored=mirrored)
        if q >= 2:  # two warm-up queries
            latencies.append((time.perf_counter() - start) * 1000)
            for stage, ms in result["timings_ms"].items():
                stages.setdefault(stage, []).append(ms)
    return {"p50": float(np.percentile(latencies, 50)), "p95": float(np.percentile(latencies, 95)),
            "rss_mb": max(rss, rss_mb()), "coarse": engine.coarse.kind,
            "frames": engine.coarse.size, "config": engine_config(engine),
            "stages": {k: float(np.median(v)) for k, v in stages.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", type=Path, help="build each collection once in this folder and reuse it")
    parser.add_argument("--milvus", action="store_true", help="instead: the coarse stage on milvus-lite (its own "
                        "section; --sizes default 1000,10000)")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    work = Path(tempfile.mkdtemp(prefix="hapvr-scale-"))
    rows, configs = [], set()
    try:
        version = Engine(Settings(data=work / "real")).model_version
        sizes = "1000,10000" if args.milvus and args.sizes == parser.get_default("sizes") else args.sizes
        for n in (int(s) for s in sizes.split(",")):
            root, build_s = collection(work, n, version, args.keep, milvus=args.milvus)
            milvus = milvus_file(root) if args.milvus else None
            # with --milvus, FAISS and Milvus on the same collection and queries, in one run
            runs = ([(True, None, ""), (True, None, str(milvus)), (False, None, str(milvus))] if milvus else
                    [(True, None, ""), (False, None, ""), (True, 0, "")])
            for flip, cascade, vectors in runs:
                m = measure(root, args.queries, np.random.default_rng(1), flip, cascade, vectors=vectors)
                configs.add(m["config"])
                st = m["stages"]
                rows.append([f"{n:,}", m["frames"], m["coarse"], "on" if flip else "off",
                             (cascade if cascade is not None else Settings().rerank_cascade) or "none",
                             round(m["p50"]), round(m["p95"]),
                             " / ".join(f"{st.get(k, 0):.0f}" for k in ("coarse", "load", "rerank", "segments")),
                             round(m["rss_mb"]), round(build_s)])
                print(json.dumps({"videos": n, "flip": flip, "cascade": cascade, **m}), flush=True)
            if args.keep is None:
                shutil.rmtree(root, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.milvus:
        body = table(["videos (60 s)", "frames", "coarse index", "mirrored query", "re-rank cascade",
                      "p50 ms", "p95 ms", "median coarse / load / re-rank / segments ms", "search process RSS MB",
                      "build s (FAISS + Milvus)"], rows)
        body += ("\n\nThe synthetic collections and queries of the FAISS table above, the coarse stage on FAISS and "
                 "on milvus-lite (`HAPVR_VECTORS=<file>`, a FLAT inner-product index) in one run: milvus-lite is one embedded "
                 "process on this machine, so these rows show the client path's cost (gRPC, Python lists, the "
                 "catch-up check before every search), not what a Milvus cluster on its own hosts would do. RSS is "
                 "the search process's only; milvus-lite's server process is not counted. Engine: "
                 + "; ".join(sorted(configs)) + ".")
        publish("scale-milvus", "Query latency at scale: Milvus backend", "python -m bench.search_scale --milvus",
                body, print_only=args.no_write)
        return
    body = table(["videos (60 s)", "frames in FAISS", "coarse index", "mirrored query", "re-rank cascade", "p50 ms",
                  "p95 ms", "median coarse / load / re-rank / segments ms", "search process RSS MB", "build s"], rows)
    body += ("\n\nEngine: " + "; ".join(sorted(configs)) + ". Latency = `Engine.search`: FAISS coarse search (64 "
             "neighbours per query frame, 100 candidates), loading candidate features, HAP-VR re-rank (with a "
             "cascade, the comparator scores only that many candidates, those of highest Chamfer share), segments. "
             "A 60-frame "
             "query, a near copy of an indexed video. Synthetic collections built from real features (see the "
             "module docstring of `bench/search_scale.py` for how, and for the page-cache caveat).")
    publish("scale", "Query latency at scale", "python -m bench.search_scale", body, print_only=args.no_write)


if __name__ == "__main__":
    main()
