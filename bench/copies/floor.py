"""Score similarity checkpoints on the copy benchmark, and show where their weakest positives fall.

`python -m bench.copies.floor [CHECKPOINT[@[HEAD:]SHARE] ...] [--parts] [--bootstrap N]` scores every copy-benchmark query
against the whole database (exhaustively, from raw features, as `bench.copies.run --checkpoint` does)
with the untrained Chamfer similarity and each checkpoint (`@SHARE` overrides its Chamfer share). Per
similarity it prints mAP, μAP, R@1 and the family that lost most mAP against untrained Chamfer (the
numbers of the "trained" column of `bench.copies.run`, without its peers and indexing timings) and its
scoring time per query, then the negatives' quantiles, the lowest
positives and how many negatives of any query outrank each of them: μAP pools all queries, so a
positive that sits below thousands of other queries' negatives costs μAP even when its own query ranks
it first (docs/TRAINING.md). `--parts` also scores each checkpoint's learned parts alone: the paper's
network (attention and comparator, no Chamfer share), its attention followed by plain Chamfer, and its
comparator on unattended features. `--bootstrap N` adds each checkpoint's gain over untrained Chamfer
with a 90% interval from N paired bootstrap draws of the test originals: with 15 originals, gains of
a few thousandths are within it (docs/TRAINING.md). `--ablation NAME=PATH`
(repeatable) also writes the "Training ablation" section of docs/BENCHMARKS.md from those checkpoints,
the same table `bench.copies.run --ablation` writes, without re-running the search pipeline per query.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from bench.copies import split
from bench.copies.run import _ignored, build_queries, cached_engine, worst_family, write_ablation
from bench.metrics import mean_average_precision, micro_average_precision, summary
from indexer.engine import Engine
from model.checkpoint import load_similarity
from model.similarity import HEADS, HAPVRSimilarity

Scores = dict[str, dict[str, float]]


def load_database(engine: Engine) -> dict[str, torch.Tensor]:
    """database clip -> features from `engine`, indexing every database clip first."""
    for name in split.all_clips():
        engine.index(split.SHARED / "permissive" / name)
    return {Path(r.source).name: torch.from_numpy(np.array(engine.store.load_features(r.id))).float()
            for r in engine.store.list(limit=10**6)}


def embed_queries(engine: Engine, queries: list[dict]) -> dict[str, torch.Tensor]:
    """query path -> features from `engine`."""
    return {q["path"]: engine.embed(q["path"]).features.float() for q in queries}


def score_all(net: HAPVRSimilarity, queries: list[dict], db: dict[str, torch.Tensor],
              query_feats: dict[str, torch.Tensor]) -> Scores:
    """query path -> database clip -> score, every pair except the query's ignored clips."""
    names = list(db)
    indexed = [net.index_video(db[n]) for n in names]
    out: Scores = {}
    with torch.no_grad():
        for q in queries:
            scores, _ = net.similarity(net.index_video(query_feats[q["path"]]), indexed)
            ignored = _ignored(q)
            out[q["path"]] = {n: s for n, s in zip(names, scores.tolist()) if n not in ignored}
    return out


def floor_report(scores: Scores, queries: list[dict], lowest: int) -> list[str]:
    """Negative quantiles and the weakest positives, each with the count of negatives at or above it."""
    positives, negatives = [], []
    for q in queries:
        for name, score in scores[q["path"]].items():
            if name in q["relevant"]:
                positives.append((score, q["family"]))
            else:
                negatives.append(score)
    positives.sort()
    negs = np.array(negatives)
    q50, q99, q999 = np.quantile(negs, [0.5, 0.99, 0.999])
    lines = [f"  {len(positives)} positives, {len(negs)} negatives; negative quantiles 50% {q50:.3f}, "
             f"99% {q99:.3f}, 99.9% {q999:.3f} (raw network scale)"]
    lines += [f"  positive {s:+.3f} ({family}): {int((negs >= s).sum())} negatives at or above"
              for s, family in positives[:lowest]]
    return lines


def headline(scores: Scores, base: Scores, queries: list[dict]) -> str:
    """mAP / μAP / R@1 overall and the family whose mAP fell most against `base`."""
    relevant = {q["path"]: set(q["relevant"]) for q in queries}
    overall = summary(scores, relevant, split.all_clips())
    worst, family = worst_family(queries, scores, base)
    change = f"{worst:+.3f} ({family})" if worst < 0 else "none worse"
    return (f"mAP {overall['mAP']:.4f}, μAP {overall['uAP']:.4f}, R@1 {overall['R@1']:.3f}; "
            f"worst family mAP vs untrained {change}")


class PairedBootstrap:
    """Paired bootstrap over the originals: all the copies of an original, and its natural near-duplicates,
    are drawn together, since they share content. It tells how far a gain measured on this few originals
    can be trusted. The draws and the base's metrics on each are made once, so that every checkpoint of a
    run is paired with the same draws and the base is not rescored per checkpoint."""

    def __init__(self, base: Scores, queries: list[dict], draws: int = 1000, seed: int = 0):
        by_original: dict[str, list[dict]] = {}
        for q in queries:
            by_original.setdefault(q["original"], []).append(q)
        self._by_original, self._database = by_original, split.all_clips()
        originals = sorted(by_original)
        rng = np.random.default_rng(seed)
        self._samples = [originals] + [list(rng.choice(originals, len(originals))) for _ in range(draws)]
        self._base = [self._metrics(base, sample) for sample in self._samples]

    def _metrics(self, scores: Scores, sample: list[str]) -> tuple[float, float]:
        picked, relevant = {}, {}
        for k, original in enumerate(sample):  # an original drawn twice counts twice
            for q in self._by_original[original]:
                key = f"{q['path']}#{k}"
                picked[key], relevant[key] = scores[q["path"]], set(q["relevant"])
        return (mean_average_precision(picked, relevant, self._database),
                micro_average_precision(picked, relevant, self._database))

    def gain(self, scores: Scores) -> dict[str, tuple[float, float, float]]:
        """{"mAP": (gain over the base, 5th percentile, 95th percentile), "uAP": (...)}"""
        gains = np.array([np.subtract(self._metrics(scores, sample), base)
                          for sample, base in zip(self._samples, self._base)])
        low, high = np.percentile(gains[1:], [5, 95], axis=0)
        return {name: (float(gains[0][i]), float(low[i]), float(high[i])) for i, name in enumerate(("mAP", "uAP"))}


def bootstrap_gain(scores: Scores, base: Scores, queries: list[dict], draws: int = 1000,
                   seed: int = 0) -> dict[str, tuple[float, float, float]]:
    """The mAP and μAP gains of `scores` over `base`, each with a 90% interval (`PairedBootstrap`)."""
    return PairedBootstrap(base, queries, draws, seed).gain(scores)


def parse_setting(text: str) -> tuple[str, dict]:
    """`PATH`, `PATH@M` (Chamfer share M) or `PATH@HEAD:M` (HEAD comparator or attention): the file and
    load_similarity's overrides."""
    file, _, setting = text.partition("@")
    if not setting:
        return file, {}
    head, _, share = setting.rpartition(":")
    if head not in ("", *HEADS):
        raise ValueError(f"{text}: the head must be one of {', '.join(HEADS)}, got {head!r}")
    return file, {"chamfer_mix": float(share), **({"comparator": head == "comparator"} if head else {})}


class _ComparatorOnly(HAPVRSimilarity):
    """A checkpoint's comparator on unattended region features (a diagnostic)."""

    def index_video(self, features: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return features if mask is None else features * mask.to(features.dtype)[..., None, None]


def _as(cls: type[HAPVRSimilarity], net: HAPVRSimilarity) -> HAPVRSimilarity:
    part = cls(f2f_topk_rate=net.f2f_topk_rate, v2v_topk_rate=net.v2v_topk_rate)
    part.load_state_dict(net.state_dict())
    return part.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("checkpoints", nargs="*", help="similarity checkpoints to compare with untrained Chamfer; "
                        "PATH@M overrides the checkpoint's Chamfer share with M, PATH@HEAD:M its head too "
                        "(comparator or attention)")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="also print each checkpoint's mAP and μAP gain with a 90%% interval from N paired "
                             "bootstrap draws of the test originals")
    parser.add_argument("--lowest", type=int, default=10, help="how many of the weakest positives to show")
    parser.add_argument("--parts", action="store_true", help="also score each checkpoint's attention and "
                        "comparator alone")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH",
                        help="a checkpoint of the training ablation (repeatable); writes its BENCHMARKS section")
    args = parser.parse_args()
    torch.set_num_threads(2)
    queries = build_queries()
    engine = cached_engine("db-raw", use_checkpoint=False)
    db, query_feats = load_database(engine), embed_queries(engine, queries)
    nets: dict[str, HAPVRSimilarity] = {"untrained Chamfer": HAPVRSimilarity(learned=False)}
    for path in args.checkpoints:
        try:
            file, overrides = parse_setting(path)
        except ValueError as error:
            parser.error(str(error))
        net = load_similarity(file, **overrides)[0]
        nets[path] = net
        if args.parts:
            nets[f"{file}: the paper's network alone"] = load_similarity(file, comparator=True, chamfer_mix=0.0)[0]
            nets[f"{file}: attention + Chamfer"] = load_similarity(file, comparator=False, chamfer_mix=0.0)[0]
            nets[f"{file}: comparator, no attention"] = _as(_ComparatorOnly, net)
    ablation = dict(item.split("=", 1) for item in args.ablation)
    for name, path in ablation.items():
        nets[name] = load_similarity(path)[0]
    scored: dict[str, Scores] = {}
    bootstrap: PairedBootstrap | None = None
    for label, net in nets.items():  # untrained Chamfer first: the base of every headline
        start = time.perf_counter()
        scores = scored[label] = score_all(net, queries, db, query_feats)
        ms = (time.perf_counter() - start) / len(queries) * 1000
        print(f"{label}: {headline(scores, scored['untrained Chamfer'], queries)}; "
              f"{ms:.0f} ms a query against all {len(db)} clips", flush=True)
        print("\n".join(floor_report(scores, queries, args.lowest)), flush=True)
        if args.bootstrap and label != "untrained Chamfer":
            bootstrap = bootstrap or PairedBootstrap(scored["untrained Chamfer"], queries, args.bootstrap)
            gain = bootstrap.gain(scores)
            print("  gain over untrained Chamfer, 90% interval over the originals: " + ", ".join(
                f"{name} {g:+.4f} [{low:+.4f}, {high:+.4f}]" for name, (g, low, high) in gain.items()), flush=True)
    if ablation:
        write_ablation(queries, {name: scored[name] for name in ["untrained Chamfer", *ablation]}, no_write=False)


if __name__ == "__main__":
    main()
