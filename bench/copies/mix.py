"""Choose how much training-free Chamfer a checkpoint's score mixes in:
`python -m bench.copies.mix CKPT --fold FOLD_CKPT [--write]`.

A learned network's score at inference is `(1 - m) * learned + m * Chamfer` (`model.similarity`,
`chamfer_mix`; docs/TRAINING.md, "Mixing in the Chamfer score"). The share m is chosen on
*validation* queries, never on test ones: the benchmark's edit families applied to the train clips of
`bench.copies.split.validation_originals`, scored with FOLD_CKPT, a network trained by the same
command as CKPT on the other train clips (`python -m bench.copies.split fold-train`). Validating on
clips the network was trained on would reward memorising them: there the learned score wins by 0.05
μAP, on unseen clips it loses. For each m of the grid this prints mAP / μAP on validation and, for the
record only, CKPT's on test; it picks the m with the best sum of validation mAP and μAP among those
that lose no family more than 0.02 validation mAP against plain Chamfer, and `--write` stores it in
CKPT's config (written atomically), which the engine then uses. Scores are computed once per
similarity and mixed afterwards: the network's mix is exactly this weighted sum
(tests/test_similarity.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.copies import split
from bench.copies.floor import Scores, load_features, score_all
from bench.copies.run import build_queries, cached_engine, worst_family
from bench.metrics import summary
from model.checkpoint import load_similarity, save_similarity
from model.similarity import HAPVRSimilarity

GRID = [round(float(m), 2) for m in np.linspace(0.0, 1.0, 11)]
MAX_FAMILY_LOSS = 0.02


def mixed(learned: Scores, chamfer: Scores, share: float) -> Scores:
    return {q: {n: (1 - share) * s + share * chamfer[q][n] for n, s in row.items()} for q, row in learned.items()}


def evaluate(scores: Scores, base: Scores, queries: list[dict]) -> dict[str, float]:
    """mAP, μAP and the largest per-family mAP loss against `base` (plain Chamfer)."""
    overall = summary(scores, {q["path"]: set(q["relevant"]) for q in queries}, split.all_clips())
    return {"mAP": overall["mAP"], "uAP": overall["uAP"], "worst": min(0.0, worst_family(queries, scores, base)[0])}


def choose(rows: dict[float, dict[str, float]]) -> float:
    """The share with the best mean of mAP and μAP among those within MAX_FAMILY_LOSS on every family."""
    allowed = [m for m, r in rows.items() if r["worst"] >= -MAX_FAMILY_LOSS] or [1.0]
    return max(allowed, key=lambda m: (rows[m]["mAP"] + rows[m]["uAP"], -m))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="the network to ship (trained on every train clip)")
    parser.add_argument("--fold", required=True, help="the same training on `bench.copies.split fold-train`")
    parser.add_argument("--write", action="store_true", help="store the chosen share in the checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(2)
    net, meta = load_similarity(args.checkpoint, chamfer_mix=0.0)
    fold = load_similarity(args.fold, chamfer_mix=0.0)[0]
    chamfer = HAPVRSimilarity(learned=False, f2f_topk_rate=net.f2f_topk_rate, v2v_topk_rate=net.v2v_topk_rate)
    engine = cached_engine("db-raw", use_checkpoint=False)
    sets = {"validation": (fold, build_queries(originals=split.validation_originals(), folder="validation")),
            "test": (net, build_queries())}
    table: dict[str, dict[float, dict[str, float]]] = {}
    for name, (learned_net, queries) in sets.items():
        db, feats = load_features(engine, queries)
        base, learned = (score_all(n, queries, db, feats) for n in (chamfer, learned_net))
        table[name] = {m: evaluate(mixed(learned, base, m), base, queries) for m in GRID}
    best = choose(table["validation"])
    print(f"{'Chamfer share':>13} | validation (fold) mAP  μAP  worst family | test mAP  μAP  worst family")
    for m in GRID:
        v, t = table["validation"][m], table["test"][m]
        mark = "  <- chosen on validation" if m == best else ""
        print(f"{m:13.1f} | {v['mAP']:.4f} {v['uAP']:.4f} {v['worst']:+.3f}        | {t['mAP']:.4f} {t['uAP']:.4f} "
              f"{t['worst']:+.3f}{mark}")
    print("(share 1.0 is plain Chamfer, the untrained similarity; 0.0 is the learned network alone)")
    if args.write:
        net.chamfer_mix = best
        extra = {k: v for k, v in meta.items() if k not in ("config", "encoder_version") and v is not None}
        save_similarity(net, Path(args.checkpoint), encoder_version=meta.get("encoder_version") or "", **extra)
        print(f"wrote chamfer_mix {best} into {args.checkpoint}")


if __name__ == "__main__":
    main()
