"""Segment localisation on the copy benchmark: `python -m bench.copies.segments [--vcsl PATH] [--no-write]`.

Every edit family of `bench/copies` (test split), plus the multi-span ones (`MULTI_SPAN_FAMILIES`), knows
its copied spans (`bench.copies.families`). For each query this searches the whole database with the
default engine and scores, with VCSL's segment precision / recall / F (`bench.segment_metrics`) and the
share of pairs whose first segment has target IoU >= 0.5 ("localised"):

- the segments the engine serves for the query's true source, wherever it ranks (the main table);
- the segments served with the top-1 hit (a wrong top-1 hit has no true span: its segments are false);
- on the very same frame-to-frame matrices (plain cosine of the region features, the orientation the
  engine chose), VCSL's aligners (alipay/VCSL, MIT: Hough voting HV, temporal network TN, dynamic
  programming DP), run from a checkout given with `--vcsl` (or HAPVR_VCSL; nothing of it is in this
  project), each with the parameters of its grid that score the best F on the validation queries (edit
  families of train clips, `bench.copies.split.validation_query_originals`), as VCSL's tuning script does.

`--tune` also prints our aligner's validation F (with the hard negatives) over `OUR_GRID` (how its defaults were
chosen). Natural near-duplicates are left out: their copied spans are not known. Writes the "segments"
section of docs/BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import importlib.util
import itertools
import logging
import os
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.copies import split
from bench.copies.families import FAMILIES, MULTI_SPAN_FAMILIES
from bench.copies.run import _ignored, build_queries, cached_engine
from bench.report import engine_config, publish, table
from bench.segment_metrics import Box, box, micro, pair_precision_recall, target_iou
from indexer.engine import Engine
from indexer.segments import align, span_seconds

log = logging.getLogger("bench.copies.segments")
SEGMENT_FAMILIES = FAMILIES + MULTI_SPAN_FAMILIES


@dataclass
class Pair:
    """One query and its true source: the matrix the engine aligns, the truth, and what was served."""
    family: str
    query: str
    target: str
    sim: np.ndarray
    query_ts: np.ndarray
    target_ts: np.ndarray
    query_duration: float
    target_duration: float
    truth: list[Box]
    served: list[Box] | None  # None: the true source was not among the served results
    score: float | None = None  # the engine's video score of the pair, where served
    top1_true: bool = False
    top1_served: list[Box] = field(default_factory=list)

    def to_boxes(self, frames: list[list[int]]) -> list[Box]:
        """VCSL's [query_min, ref_min, query_max, ref_max] frame indices -> seconds, with the conversion our
        aligner uses (`indexer.segments.span_seconds`), so that both are scored alike."""
        out = []
        for q0, t0, q1, t1 in frames:
            qs, qe = span_seconds(self.query_ts, int(q0), int(q1), self.query_duration)
            ts, te = span_seconds(self.target_ts, int(t0), int(t1), self.target_duration)
            out.append((qs, ts, qe, te))
        return out


def _pair(engine: Engine, q: dict, emb, served: dict | None, target_id: str, truth: list[Box]) -> Pair:
    """The pair of a query and one target: the matrix in the orientation the engine served it in."""
    record = engine.video(target_id)
    target = torch.from_numpy(np.asarray(engine.store.load_features(record.id), dtype=np.float32))
    views = [emb.features] if emb.mirrored is None else [emb.features, emb.mirrored]
    if served is not None:
        sim = engine.frame_matrix(views[int(served["mirrored"])], target)
    else:  # not served (cut by the cascade): the orientation whose frames match better
        sims = [engine.frame_matrix(v, target) for v in views]
        sim = max(sims, key=lambda m: float(m.max(axis=1).mean()) if m.size else 0.0)
    return Pair(family=q["family"], query=q["path"], target=Path(record.source).name, sim=sim, query_ts=np.asarray(emb.timestamps),
                target_ts=np.asarray(record.timestamps), query_duration=emb.info.duration,
                target_duration=record.duration, truth=truth,
                served=None if served is None else [box(s) for s in served["segments"]],
                score=None if served is None else served["score"])


def collect(engine: Engine, queries: list[dict], desc: str) -> tuple[list[Pair], list[Pair]]:
    """(true pairs, hard negatives): each query with its true source, and with the unrelated clip the engine
    ranks highest (no copied span: any segment there is false). The background clip of a pip, reverse-pip,
    insertion or compilation query is neither (`bench.copies.run._ignored`), nor are the clips that share
    its scene (`bench.copies.split.look_alikes`)."""
    names = {r.id: Path(r.source).name for r in engine.store.list(limit=10**6)}
    ids = {name: vid for vid, name in names.items()}
    pairs, negatives = [], []
    for q in tqdm(queries, desc=desc, unit="query"):
        if "spans" not in q:
            continue
        emb = engine.embed(q["path"], mirrored=engine.settings.query_flip)
        result = engine.search(emb.features, emb.timestamps, emb.info.duration, top_k=len(names),
                               mirrored=emb.mirrored)
        served = next((r for r in result["results"] if names[r["id"]] == q["original"]), None)
        pair = _pair(engine, q, emb, served, ids[q["original"]], [box(s) for s in q["spans"]])
        top = result["results"][0] if result["results"] else None
        pair.top1_true = top is not None and names[top["id"]] == q["original"]
        pair.top1_served = [] if top is None else [box(s) for s in top["segments"]]
        pairs.append(pair)
        skip = set(q["relevant"]) | {n for other in _ignored(q) for n in split.look_alikes(other)}
        negative = next((r for r in result["results"] if names[r["id"]] not in skip), None)
        if negative is not None:
            negatives.append(_pair(engine, q, emb, negative, negative["id"], []))
    return pairs, negatives


# ----- VCSL's aligners, run from a checkout beside ours
def load_vcsl(root: str | None) -> tuple[dict[str, Callable] | None, str]:
    """VCSL's tn / hv / dp functions from `root`/vcsl/vta.py, or (None, why not).

    vta.py is loaded alone: its package also imports a YOLOv5 copy (for SPD, a learned detector whose
    weights are not offline) and tslearn (for DTW, not compared here), which are stubbed; numpy 2 dropped
    `np.NINF`, which its DP uses, so the alias is put back for this process."""
    if not root:
        return None, "no VCSL checkout given (--vcsl PATH or HAPVR_VCSL)"
    path = Path(root) / "vcsl" / "vta.py"
    if not path.exists():
        return None, f"{path} not found"
    try:
        from loguru import logger
        logger.remove()  # its TN logs every graph it builds
        pkg = types.ModuleType("vcsl")
        pkg.__path__ = [str(path.parent)]
        sys.modules.setdefault("vcsl", pkg)
        yolo = types.ModuleType("vcsl.yolov5")
        for name in ("attempt_load", "letterbox", "non_max_suppression", "scale_coords"):
            setattr(yolo, name, None)
        sys.modules["vcsl.yolov5"] = yolo
        if importlib.util.find_spec("tslearn") is None:
            tslearn = types.ModuleType("tslearn")
            metrics = types.ModuleType("tslearn.metrics")
            metrics.dtw_path_from_metric = None
            tslearn.metrics = metrics
            sys.modules.update({"tslearn": tslearn, "tslearn.metrics": metrics})
        if not hasattr(np, "NINF"):
            np.NINF = -np.inf
        spec = importlib.util.spec_from_file_location("vcsl.vta", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception as exc:  # noqa: BLE001 - a reference that does not load is reported, not fatal
        return None, f"{path} did not load ({type(exc).__name__}: {exc}); it needs numba, networkx, loguru"
    return {"HV": module.hv, "TN": module.tn, "DP": module.dp}, str(path)


def _grid(**axes) -> list[dict]:
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


#: VCSL's parameters, the ranges of its tuning script widened to our 1-frame-per-second matrices
#: (its min_length of 5 frames is 5 s here, longer than some copies)
VCSL_GRIDS = {
    "HV": _grid(min_sim=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7], iou_thresh=[0.1, 0.3, 0.5, 0.9]),
    "TN": _grid(tn_max_step=[5, 10], tn_top_k=[5], min_sim=[0.2, 0.3, 0.4, 0.5, 0.6], min_length=[0, 1, 3],
                max_iou=[0.3]),
    "DP": _grid(discontinue=[3, 9], min_sim=[1.0], ave_sim=[1.2, 1.3, 1.4, 1.5, 1.6], min_length=[0, 1, 3],
                diagonal_thres=[10, 30]),
}
OUR_GRID = _grid(background_cap=[0.1, 0.15, 0.25], min_contrast=[0.06, 0.1, 0.14], elsewhere_cost=[0.5, 1.0],
                 speed_prior=[0.75, 0.9])


def run_vcsl(fn: Callable, pair: Pair, params: dict) -> list[Box]:
    if pair.sim.size == 0:
        return []
    return pair.to_boxes(fn(pair.sim.astype(np.float64).copy(), **params))


def run_ours(pair: Pair, **params) -> list[Box]:
    return [box(s.as_dict()) for s in align(pair.sim, pair.query_ts, pair.target_ts, pair.query_duration,
                                            pair.target_duration, **params).segments]


def scores(pairs: list[Pair], predictions: list[list[Box] | None]) -> dict[str, float]:
    """VCSL micro P / R / F, and over the pairs with a true span the localised share and how many got no
    segment."""
    m = micro(pair_precision_recall(pred or [], p.truth) for p, pred in zip(pairs, predictions))
    truths = [(p, pred) for p, pred in zip(pairs, predictions) if p.truth]  # negatives have nothing to localise
    localised = [bool(pred) and target_iou(pred[0], p.truth) >= 0.5 for p, pred in truths]
    return {**m, "localised": float(np.mean(localised)) if localised else 0.0,
            "none": sum(1 for _, pred in truths if not pred)}


def tune(fn: Callable, grid: list[dict], pairs: list[Pair], label: str) -> tuple[dict, dict]:
    best = None
    for params in tqdm(grid, desc=f"tune {label}", unit="setting"):
        s = scores(pairs, [fn(p, params) for p in pairs])
        if best is None or s["F"] > best[1]["F"]:
            best = (params, s)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vcsl", default=os.environ.get("HAPVR_VCSL"), help="a checkout of alipay/VCSL")
    parser.add_argument("--tune", action="store_true", help="also print our aligner's validation grid")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    engine = cached_engine("db")
    for name in tqdm(split.all_clips(), desc="index", unit="video"):
        engine.index(split.SHARED / "permissive" / name)
    engine.save()
    test, test_neg = collect(engine, build_queries(families=SEGMENT_FAMILIES), "test")
    validation, validation_neg = [], []
    for fold in range(split.FOLDS):
        pairs, negatives = collect(engine, build_queries(
            originals=split.validation_query_originals(fold), folder="validation" + (f"-{fold}" if fold else ""),
            families=SEGMENT_FAMILIES), f"validation {fold}")
        validation += pairs
        validation_neg += negatives

    methods: dict[str, tuple[list, list]] = {"served (ours)": ([p.served for p in test], [p.served for p in test_neg])}
    times = []
    ours = []
    for p in test + test_neg:
        start = time.perf_counter()
        ours.append(run_ours(p))
        times.append((time.perf_counter() - start) * 1000)
    mismatched = sum(1 for p, o in zip(test + test_neg, ours) if p.served is not None and p.served != o)
    notes = []
    if args.tune:
        rows = []
        for g in OUR_GRID:
            s = scores(validation + validation_neg, [run_ours(p, **g) for p in validation + validation_neg])
            rows.append([*g.values(), f"{s['F']:.3f}", f"{s['localised']:.3f}"])
        print(table([*OUR_GRID[0], "validation F (with negatives)", "localised"], rows))
    vcsl, where = load_vcsl(args.vcsl)
    tuned = {}
    if vcsl is None:
        notes.append(f"VCSL aligners: not run ({where}).")
    else:
        for name, fn in vcsl.items():
            run = lambda p, g, fn=fn: run_vcsl(fn, p, g)  # noqa: E731
            for label, tuning in ((f"VCSL {name}", validation), (f"VCSL {name} (tuned with negatives)",
                                                                  validation + validation_neg)):
                params, val = tune(run, VCSL_GRIDS[name], tuning, label)
                tuned[label] = (params, val)
                methods[label] = ([run(p, params) for p in test], [run(p, params) for p in test_neg])
    write(test, test_neg, methods, times, mismatched, tuned, notes, engine, args.no_write, where if vcsl else None)


def longest_self_match_ms(engine: Engine) -> tuple[int, float]:
    """(frames, ms of `align`) for the longest database clip against itself: the largest matrix here."""
    record = max(engine.store.list(limit=10**6), key=lambda r: r.duration)
    feats = torch.from_numpy(np.asarray(engine.store.load_features(record.id), dtype=np.float32))
    sim = engine.frame_matrix(feats, feats)
    spent = []
    for _ in range(5):
        start = time.perf_counter()
        align(sim, record.timestamps, record.timestamps, record.duration, record.duration)
        spent.append((time.perf_counter() - start) * 1000)
    return len(record.timestamps), float(np.median(spent))


def write(test, test_neg, methods, times, mismatched, tuned, notes, engine, no_write, vcsl_path) -> None:
    families = SEGMENT_FAMILIES
    names = list(methods)
    rows = []
    for family in families + ["all"]:
        idx = [i for i, p in enumerate(test) if family in ("all", p.family)]
        row: list[object] = [family, len(idx)]
        for n in names:
            s = scores([test[i] for i in idx], [methods[n][0][i] for i in idx])
            row.append(f"{s['F']:.3f} / {s['localised']:.2f} / {s['none']}")
        rows.append(row)
    body = table(["family", "pairs"] + [f"{n}: F / localised / no segment" for n in names], rows)
    overall_rows = []
    for n, (preds, neg_preds) in methods.items():
        s = scores(test, preds)
        with_negatives = scores(test + test_neg, preds + neg_preds)
        false = sum(1 for pred in neg_preds if pred)
        overall_rows.append([n, f"{s['precision']:.3f}", f"{s['recall']:.3f}", f"{s['F']:.3f}",
                             f"{s['localised']:.3f}", s["none"], f"{false} of {len(test_neg)}",
                             f"{with_negatives['F']:.3f}"])
    body += "\n\n" + table(["aligner", "precision", "recall", "F", "localised (target IoU ≥ 0.5)", "no segment",
                             "hard negatives with a segment", "F with the negatives"], overall_rows)
    hits = [p for p in test if p.top1_true]
    wrong = [p for p in test if not p.top1_true]
    top1 = scores(hits, [p.top1_served for p in hits])
    frames, self_ms = longest_self_match_ms(engine)
    body += (f"\n\nTop-1 hits: {len(hits)} of {len(test)} queries rank their true source first; their served "
             f"segments: F {top1['F']:.3f}, localised {top1['localised']:.3f}, {top1['none']} without a segment. "
             f"Of the {len(wrong)} wrong top-1 hits, {sum(1 for p in wrong if p.top1_served)} carry segments.")
    body += (f"\n\nOur aligner's time per pair (the matrix already computed): p50 "
             f"{np.percentile(times, 50):.1f} ms, p95 {np.percentile(times, 95):.1f} ms, max {max(times):.1f} ms "
             f"over the {len(times)} test pairs and hard negatives (query up to "
             f"{max(p.sim.shape[0] for p in test)} frames); the longest database clip against itself "
             f"({frames} x {frames} frames): {self_ms:.1f} ms. Recomputed from the same matrices, our aligner "
             f"gives the served segments on all but {mismatched} pairs.")
    if tuned:
        body += ("\n\nVCSL parameters, the best validation F of `VCSL_GRIDS` (bench/copies/segments.py): on the "
                 "true validation pairs, as VCSL's tuning script does, and on those plus their hard negatives:")
        for name, (params, val) in tuned.items():
            body += f"\n- {name}: {params} (validation F {val['F']:.3f}, localised {val['localised']:.3f})"
        body += (f"\n\nVCSL code: `{Path(vcsl_path).relative_to(Path(vcsl_path).parents[2])}` of a checkout of "
                 "alipay/VCSL (MIT), run beside this one, not part of it (docs/EVALUATION.md says how).")
    for note in notes:
        body += f"\n\n{note}"
    body += ("\n\nPairs: each test query with its true source, wherever the engine ranks it (`compilation` "
             "queries copy two spans each); hard negatives: each query with the unrelated clip the engine ranks "
             "highest, where any segment is false (precision 0 for that pair). Columns: VCSL's segment F (micro: "
             "precision over pairs with a segment, recall over pairs with a true span), the share of pairs whose "
             "first segment has target IoU ≥ 0.5 with a true span, and the pairs without a segment. Our "
             "aligner's parameters were chosen on the validation pairs with their negatives (`--tune` prints the "
             f"grid). Engine: {engine_config(engine)}.")
    publish("segments", "Segment localisation (per family, VCSL metric)",
            "python -m bench.copies.segments --vcsl PATH", body, print_only=no_write)


if __name__ == "__main__":
    main()
