"""Where a similarity's weakest positives fall among all negatives: the μAP diagnostic of docs/TRAINING.md.

`python -m bench.copies.floor [CHECKPOINT ...]` scores every copy-benchmark query against the whole
database (exhaustively, from raw features, as `bench.copies.run --checkpoint` does) with the untrained
Chamfer similarity and each checkpoint, then prints the negatives' quantiles, the lowest positives and
how many negatives of any query outrank each of them. μAP pools all queries, so a positive that sits
below thousands of other queries' negatives costs μAP even when its own query ranks it first.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.copies import split
from bench.copies.run import OUT, _ignored, build_queries
from indexer.engine import Engine
from indexer.settings import Settings
from model.checkpoint import load_similarity
from model.similarity import HAPVRSimilarity


def pair_scores(net: HAPVRSimilarity, queries: list[dict], db: dict[str, torch.Tensor],
                query_feats: dict[str, torch.Tensor]) -> tuple[list[tuple[float, str]], np.ndarray]:
    """(positives as (score, family), lowest first; negative scores) over every query x database pair."""
    names = list(db)
    indexed = [net.index_video(db[n]) for n in names]
    positives, negatives = [], []
    with torch.no_grad():
        for q in queries:
            scores, _ = net.similarity(net.index_video(query_feats[q["path"]]), indexed)
            ignored = _ignored(q)
            for name, score in zip(names, scores.tolist()):
                if name in ignored:
                    continue
                if name in q["relevant"]:
                    positives.append((score, q["family"]))
                else:
                    negatives.append(score)
    return sorted(positives), np.array(negatives)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="*", help="similarity checkpoints to compare with untrained Chamfer")
    parser.add_argument("--lowest", type=int, default=10, help="how many of the weakest positives to show")
    args = parser.parse_args()
    torch.set_num_threads(2)
    queries = build_queries()
    raw = Engine(Settings(data=OUT / "db-raw", use_checkpoint=False))
    shared = split.SHARED / "permissive"
    for name in split.all_clips():
        raw.index(shared / name)
    db = {Path(r.source).name: torch.from_numpy(np.array(raw.store.load_features(r.id))).float()
          for r in raw.store.list(limit=10**6)}
    query_feats = {q["path"]: raw.embed(q["path"]).features for q in queries}
    nets = {"untrained Chamfer": HAPVRSimilarity(learned=False)}
    nets |= {path: load_similarity(path)[0].eval() for path in args.checkpoints}
    for label, net in nets.items():
        positives, negatives = pair_scores(net, queries, db, query_feats)
        q50, q99, q999 = np.quantile(negatives, [0.5, 0.99, 0.999])
        print(f"{label}: {len(positives)} positives, {len(negatives)} negatives; "
              f"negative quantiles 50% {q50:.3f}, 99% {q99:.3f}, 99.9% {q999:.3f} (raw network scale)")
        for score, family in positives[: args.lowest]:
            print(f"  positive {score:+.3f} ({family}): {int((negatives >= score).sum())} negatives at or above")


if __name__ == "__main__":
    main()
