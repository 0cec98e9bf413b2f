"""Validate how a checkpoint scores a pair: `python -m bench.copies.mix CKPT --fold FOLD0 [--fold FOLD1] [--write]`.

The shipped recipe fixes that setting (`make train-checkpoint` passes `--head comparator --chamfer-mix 0.5`
to `hapvr train`: docs/TRAINING.md, "The inference setting"); this is the study it rests on
(`make validate-setting`), and `--write` applies the study's choice to a checkpoint trained on other data.

Two inference choices that are not in the paper (model.similarity; docs/TRAINING.md): the video
*head*, the comparator CNN (the paper's) or the training-free temporal TopK-Chamfer on the attended
S^F (`comparator=False`: "attention"), and the Chamfer share m, so that the score is
`(1 - m) * head + m * Chamfer of the unattended features` (`chamfer_mix`). Both are chosen on
*validation* queries, never on test ones. Fold I (`--fold`, I = 0, 1 in the order given) is a
network trained by the same command as CKPT on `python -m bench.copies.split fold-train I`, and it
scores the benchmark's edit families applied to the train clips of varied content it did not see
(`bench.copies.split.validation_query_originals(I)`: like the test queries, none from the ASL room);
validation is the mean over the fold networks given.
`--fold I:PATH` names the fold explicitly, so that several networks per fold (the same recipe with
other `--seed`s) can be averaged: the choice then rests less on one training run's noise.
Validating on clips the network was trained on would reward memorising them (there the learned score
leads plain Chamfer by 0.05 μAP, far more than on unseen clips). For each head and m of the grid this prints mAP / μAP on validation
and, for the record only, CKPT's on test; it picks the pair whose smaller validation gain over plain
Chamfer (of mAP and μAP: the goal is a gain in both) is largest among those that lose no family more
than 0.02 validation mAP against plain Chamfer in any fold, and
`--write` stores it in CKPT's config (written atomically), which the engine then uses. Scores are
computed once per head and mixed afterwards: the network's mix is exactly this weighted sum
(tests/test_similarity.py).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.copies import split
from bench.copies.floor import Scores, embed_queries, load_database, score_all
from bench.copies.run import build_queries, cached_engine, worst_family
from bench.metrics import summary
from indexer.engine import Engine
from model.checkpoint import load_similarity, save_similarity
from model.similarity import HEADS, HAPVRSimilarity

GRID = [round(float(m), 2) for m in np.linspace(0.0, 1.0, 11)]
MAX_FAMILY_LOSS = 0.02


def mixed(learned: Scores, chamfer: Scores, share: float) -> Scores:
    return {q: {n: (1 - share) * s + share * chamfer[q][n] for n, s in row.items()} for q, row in learned.items()}


def evaluate(scores: Scores, base: Scores, queries: list[dict]) -> dict[str, float]:
    """mAP, μAP and the largest per-family mAP loss against `base` (plain Chamfer)."""
    overall = summary(scores, {q["path"]: set(q["relevant"]) for q in queries}, split.all_clips())
    loss, family = worst_family(queries, scores, base)
    return {"mAP": overall["mAP"], "uAP": overall["uAP"], "worst": min(0.0, loss), "family": family if loss < 0 else ""}


def smaller_gain(row: dict[str, float], base: dict[str, float]) -> float:
    """The smaller of the mAP and μAP gains of `row` over `base`: the issue's goal is a gain in both, so a
    setting that buys mAP with μAP (or the other way round) does not count as better."""
    return min(row["mAP"] - base["mAP"], row["uAP"] - base["uAP"])


def choose(rows: dict[tuple[str, float], dict[str, float]]) -> tuple[str, float]:
    """The (head, share) whose smaller gain over plain Chamfer (comparator at share 1.0) is largest, among
    those within MAX_FAMILY_LOSS on every family; ties go to the paper's comparator, then to the larger
    share (closer to the untrained score). When no setting gains on both, that is plain Chamfer."""
    base = rows[("comparator", 1.0)]
    allowed = [key for key, r in rows.items() if r["worst"] >= -MAX_FAMILY_LOSS]
    return max(allowed, key=lambda key: (round(smaller_gain(rows[key], base), 6), key[0] == "comparator", key[1]))


def parse_folds(values: list[str]) -> list[tuple[int, str]]:
    """(fold index, checkpoint) per `--fold`: `I:PATH`, or a bare PATH whose index is its position."""
    out = []
    for position, value in enumerate(values):
        index, sep, rest = value.partition(":")
        fold, path = (int(index), rest) if sep and index.isdigit() else (position, value)
        if not 0 <= fold < split.FOLDS:
            raise ValueError(f"--fold {value}: the fold must be 0-{split.FOLDS - 1} (give I:PATH for a second seed)")
        out.append((fold, path))
    return out


def validation_queries(fold: int) -> list[dict]:
    """Fold `fold`'s validation queries: the edit families of `validation_query_originals(fold)`."""
    return build_queries(originals=split.validation_query_originals(fold),
                         folder="validation" + (f"-{fold}" if fold else ""))


def score_tables(paths: list[str], queries: list[dict], engine: Engine,
                 db: dict[str, torch.Tensor]) -> list[dict[tuple[str, float], dict[str, float]]]:
    """evaluate() of each checkpoint in `paths` at every head and share of the grid on `queries`
    against `db` (the queries are embedded once for all of them)."""
    feats = embed_queries(engine, queries)
    base = score_all(HAPVRSimilarity(learned=False), queries, db, feats)
    tables = []
    for path in paths:
        table = {}
        for head in HEADS:
            net = load_similarity(path, chamfer_mix=0.0, comparator=head == "comparator")[0]
            learned = score_all(net, queries, db, feats)
            table.update({(head, m): evaluate(mixed(learned, base, m), base, queries) for m in GRID})
        tables.append(table)
    return tables


def mean_over_folds(tables: list[dict], folds: list[int] | None = None) -> dict[tuple[str, float], dict[str, float]]:
    """Mean mAP and μAP over the folds, and the worst family loss of any fold. `folds[k]` is the fold
    of `tables[k]` (default: one network per fold); the networks of one fold (other seeds) are averaged
    first, their worst family loss too, so that a second seed estimates the recipe's loss instead of
    adding one more draw to take the worst of."""
    folds = list(range(len(tables))) if folds is None else folds
    out = {}
    for key in tables[0]:
        per_fold = []
        for fold in sorted(set(folds)):
            rows = [t[key] for t, f in zip(tables, folds) if f == fold]
            per_fold.append({"mAP": float(np.mean([r["mAP"] for r in rows])),
                             "uAP": float(np.mean([r["uAP"] for r in rows])),
                             "worst": float(np.mean([r["worst"] for r in rows])),
                             "family": min(rows, key=lambda r: r["worst"])["family"]})
        worst = min(per_fold, key=lambda row: row["worst"])
        out[key] = {"mAP": float(np.mean([r["mAP"] for r in per_fold])),
                    "uAP": float(np.mean([r["uAP"] for r in per_fold])),
                    "worst": worst["worst"], "family": worst["family"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoint", help="the network to ship (trained on every train clip)")
    parser.add_argument("--fold", action="append", required=True,
                        help="the same training on `bench.copies.split fold-train I`: I:PATH, or PATH for "
                             "I = 0, 1 in order; repeat a fold with other seeds to average them")
    parser.add_argument("--write", action="store_true", help="store the chosen head and share in the checkpoint")
    parser.add_argument("--no-test", action="store_true",
                        help="skip CKPT's test columns (for the record only; they take the test queries and "
                             "a third of the time): what `make validate-setting` runs")
    args = parser.parse_args()
    try:
        fold_paths = parse_folds(args.fold)
    except ValueError as error:
        parser.error(str(error))
    torch.set_num_threads(2)
    engine = cached_engine("db-raw", use_checkpoint=False)
    db = load_database(engine)
    folds, fold_of, labels = [], [], []
    for fold in sorted({f for f, _ in fold_paths}):
        members = [k for k, (f, _) in enumerate(fold_paths) if f == fold]
        folds += score_tables([fold_paths[k][1] for k in members], validation_queries(fold), engine, db)
        fold_of += [fold] * len(members)
        labels += [f"fold {fold}" + (f"#{n}" if len(members) > 1 else "") for n in range(len(members))]
    validation = mean_over_folds(folds, fold_of)
    test = None if args.no_test else score_tables([args.checkpoint], build_queries(), engine, db)[0]
    best = choose(validation)
    per_fold = "".join(f" {label:>8} mAP  μAP |" for label in labels)
    base = validation[("comparator", 1.0)]
    print(f"{'head':>10} {'share':>5} | validation mAP  μAP  min gain  worst family  |{per_fold}"
          + ("" if test is None else " test mAP  μAP  worst family"))
    for key in validation:
        v = validation[key]
        cells = "".join(f"      {f[key]['mAP']:.4f} {f[key]['uAP']:.4f} |" for f in folds)
        if test is not None:
            t = test[key]
            cells += f"     {t['mAP']:.4f} {t['uAP']:.4f} {t['worst']:+.3f} {t['family']}"
        mark = "  <- chosen on validation" if key == best else ""
        print(f"{key[0]:>10} {key[1]:5.1f} |     {v['mAP']:.4f} {v['uAP']:.4f} {smaller_gain(v, base):+.4f} "
              f"{v['worst']:+.3f} {v['family']:<9} |"
              f"{cells}{mark}")
    print("(share 1.0 is plain Chamfer, the untrained similarity; comparator at 0.0 is the paper's learned network "
          "alone; attention at 0.0 is its attention followed by plain Chamfer; validation is the mean of the fold "
          "networks (seeds of one fold averaged first), its worst family the worst of any fold)")
    if args.write:
        net, meta = load_similarity(args.checkpoint)
        net.comparator, net.chamfer_mix = best[0] == "comparator", best[1]
        extra = {k: v for k, v in meta.items() if k not in ("config", "encoder_version") and v is not None}
        save_similarity(net, Path(args.checkpoint), encoder_version=meta.get("encoder_version") or "", **extra)
        print(f"wrote comparator {net.comparator}, chamfer_mix {best[1]} into {args.checkpoint}")


if __name__ == "__main__":
    main()
