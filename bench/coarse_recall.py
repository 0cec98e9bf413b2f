"""Coarse-stage recall at scale: `python -m bench.coarse_recall [--sizes 10000,100000] [--nprobe 8,16,32,64,128]`.

The copy benchmark (bench/copies/run.py) searches 57 clips, so its coarse index is exact and every clip
is a candidate: it cannot show what the IVF coarse stage loses when the collection is large. Here the
57 clips' stored descriptors are added (in memory, never saved) to the IVF-SQ8 index of a synthetic
collection of `bench/search_scale` (10k or 100k videos of 60 s, built from real features), and each of the
copy benchmark's test queries (every edit family, mirrored view included, as a search runs it) goes
through `indexer.search.coarse_candidates` at several `nprobe`. The clips' and the queries' descriptors
first go through one fixed random signed permutation of the 512 dimensions, the kind of map that makes
each synthetic video (dot products, hence every score, are unchanged): the IVF lists were trained on
the synthetic videos, and the clips should be as much in their distribution as any of them (without
it the numbers come out close: 0.897 and 0.866 of the sources found at nprobe 16 among 10k and 100k).
Reported: the share of queries whose
source (or its natural near-duplicate) is among the candidates the re-rank sees (`HAPVR_CANDIDATES`),
the share where it is the coarse stage's first, and the coarse stage's time per query. What it cannot
show: synthetic videos are unrelated to every query by construction, so a collection with many near
relatives of a query (one show's episodes) would crowd its candidates more than this one does.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.copies import split
from bench.copies.run import _ignored, build_queries, cached_engine
from bench.report import engine_config, publish, table
from bench.search_scale import collection
from config.settings import Settings
from indexer.coarse import CoarseIndex, frame_descriptors, pack_ids
from indexer.search import coarse_candidates
from indexer.store import Store


def like_a_synthetic_video(seed: int = 12345):
    """One fixed signed permutation of the dimensions, as `bench.search_scale.synthetic` gives each video."""
    rng = np.random.default_rng(seed)
    perm, sign = rng.permutation(512), rng.choice(np.array([-1.0, 1.0], dtype=np.float32), size=512)
    return lambda d: np.ascontiguousarray(d[:, perm] * sign, dtype=np.float32)


def query_views(engine, queries: list[dict], transform) -> list[list[np.ndarray] | None]:
    """Each query's frame descriptors, the query's own and its mirror's (None: every frame blank)."""
    out = []
    for q in tqdm(queries, desc="embed", unit="query"):
        emb = engine.embed(q["path"], mirrored=True)
        out.append(None if emb.blank else [transform(frame_descriptors(v.numpy()))
                                           for v in (emb.features, emb.mirrored)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--nprobe", default="8,16,32,64,128")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", type=Path, help="build each synthetic collection once in this folder and reuse it")
    args = parser.parse_args()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    settings = Settings()
    queries = build_queries()
    ours = cached_engine("db")
    shared = split.SHARED / "permissive"
    for name in split.all_clips():
        ours.index(shared / name)
    ours.save()
    records = ours.store.list(limit=10**6)
    transform = like_a_synthetic_video()
    views = query_views(ours, queries, transform)
    work = Path(tempfile.mkdtemp(prefix="hapvr-recall-"))
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        root, _ = collection(work, n, ours.model_version, args.keep)
        coarse = CoarseIndex(Store(root, ours.model_version), ivf_threshold=10**12)
        # the real clips after the synthetic rows: seq n + their own seq
        names = {n + r.seq: Path(r.source).name for r in records}
        desc = [transform(frame_descriptors(ours.store.load_features(r.id))) for r in records]
        ids = [pack_ids(n + r.seq, len(d)) for r, d in zip(records, desc)]
        coarse.add_vectors(np.concatenate(desc), np.concatenate(ids), n + max(r.seq for r in records))
        for nprobe in (int(p) for p in args.nprobe.split(",")):
            coarse.nprobe = nprobe
            found, first, times, missed = [], [], [], {}
            for q, v in zip(queries, views):
                if v is None:
                    continue
                start = time.perf_counter()
                ranked = coarse_candidates(coarse, v, settings.frame_neighbours, None, settings.candidates)
                times.append((time.perf_counter() - start) * 1000)
                ignored = _ignored(q)
                hits = [names.get(seq) for seq, _, _ in ranked if names.get(seq) not in ignored]
                relevant = set(q["relevant"])
                found.append(any(h in relevant for h in hits))
                first.append(bool(hits) and hits[0] in relevant)
                if not found[-1]:
                    missed[q["family"]] = missed.get(q["family"], 0) + 1
            rows.append([f"{n:,}", f"{coarse.size:,}", nprobe, len(found), f"{np.mean(found):.3f}",
                         f"{np.mean(first):.3f}", statistics.median(times), float(np.percentile(times, 95)),
                         ", ".join(f"{f} {c}" for f, c in sorted(missed.items())) or "none"])
            print(rows[-1], flush=True)
        coarse.store.close()
    body = table(["synthetic videos (60 s)", "frames in FAISS", "nprobe", "queries",
                  f"source among the {settings.candidates} candidates", "source first", "coarse median ms",
                  "coarse p95 ms", "queries missing their source, by family"], rows)
    body += ("\n\n" + f"Engine: {engine_config(ours)}. Index: IVF-SQ8 of the synthetic collection "
             f"(`indexer.coarse.build_ivf`), {settings.frame_neighbours} neighbours per query frame, the "
             "query and its mirror in one search; the 57 shared clips' own descriptors added to it (clips and "
             "queries under one signed permutation, see the module docstring). Queries: "
             "the copy benchmark's test queries (19 edit families and compilations of the test originals, "
             "and the natural near-duplicates); a query's source is its original or that original's natural "
             "near-duplicate, and the clips `bench/copies/run.py` leaves out of a query's ranking are left out "
             f"here. The engine's default nprobe is {settings.nprobe}.")
    publish("coarse-recall", "Coarse-stage recall at scale", "python -m bench.coarse_recall", body,
            print_only=args.no_write)


if __name__ == "__main__":
    main()
