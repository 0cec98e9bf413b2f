"""Fit and measure the calibrated confidence: `python -m bench.copies.calibrate [--no-write]`.

The engine's `confidence` is a probability that a (query, result) pair is a copy, mapped from what the
engine measures for that pair (indexer/confidence.py). The map is fitted here on *held-out* pairs only:
the benchmark's edit families applied to the train originals (both validation folds of
`bench.copies.split`, every clip of varied content of the train split), searched with the default
engine against every clip of permissive/ and half of more/ (`split.more_half(0)`: diverse unrelated
clips, the negatives a collection holds); every result the engine returns at the default top-k is one
pair, labelled a copy when it is the query's original (or its natural near-duplicate), unrelated
otherwise.
The background clip of an inset, insertion or compilation query and the clips that share its scene
(`split.look_alikes`) are neither and are left out, as in the retrieval benchmark.

It is then measured on the test queries (test originals, never queried by the fit) against permissive/
and the *other* half of more/ (distractors the fit never saw): expected calibration
error over ten equal-width bins, a reliability diagram (docs/calibration.png), and precision / recall of
the pairs at confidence 0.5, 0.9 and 0.99. The fitted map is written to model/assets/confidence.json (`--out`) with
the model it belongs to; the engine uses it only with that model. `make train-checkpoint` refits it for
the checkpoint it trains.
"""
from __future__ import annotations

import argparse
import json
import logging
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench.copies import split
from bench.copies.run import DOCS, OUT, _ignored, build_queries, cached_engine
from bench.copies.segments import SEGMENT_FAMILIES
from bench.report import engine_config, publish, table
from indexer import confidence as conf
from indexer.engine import Engine

log = logging.getLogger("bench.copies.calibrate")
LEVELS = (0.5, 0.9, 0.99)


def collect(engine: Engine, queries: list[dict], desc: str) -> list[dict]:
    """One row per (query, returned result), labelled (`label`): the engine's measurements of the pair.
    The searches are cached per model version, database and query set under bench/out/copies/calibration."""
    key = zlib.crc32(json.dumps([engine.model_version, sorted(q["path"] for q in queries), engine.settings.top_k,
                                 engine.store.count(), engine.data.name]).encode()) & 0xFFFFFFFF
    cache = OUT / "calibration" / f"{desc.replace(' ', '-')}-{key:08x}.json"
    if cache.is_file():
        rows = json.loads(cache.read_text())
    else:
        names = {r.id: Path(r.source).name for r in engine.store.list(limit=10**6)}
        rows = []
        for q in tqdm(queries, desc=desc, unit="query"):
            emb = engine.embed(q["path"], mirrored=engine.settings.query_flip)
            result = engine.search(emb.features, emb.timestamps, emb.info.duration, mirrored=emb.mirrored,
                                   explain=True)
            rows += [{"query": q["path"], "family": q["family"], "target": names[r["id"]], "rank": rank,
                      "evidence": r["evidence"]} for rank, r in enumerate(result["results"])]
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(rows))
    by_path = {q["path"]: q for q in queries}
    return [{**row, "label": lab} for row in rows if (lab := label(by_path[row["query"]], row["target"])) is not None]


def collection_scans(engine: Engine, half: int) -> list[dict]:
    """What `hapvr duplicates` scores: each clip of `split.more_half(half)` in `engine`'s database searched
    with its stored features (itself left out), one row per returned result, labelled by the natural groups
    of both READMEs (1 a member of its group, 0 anything else: the clips the README names related but not
    copies, one table and camera, two cameras on one scene, adjacent excerpts of one shot, are 0)."""
    key = zlib.crc32(json.dumps([engine.model_version, engine.settings.top_k, engine.store.count(),
                                 engine.data.name, half]).encode()) & 0xFFFFFFFF
    cache = OUT / "calibration" / f"scans-{half}-{key:08x}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    names = {Path(f).name for f in split.more_half(half)}
    rows = []
    for record in tqdm([r for r in engine.store.list(limit=10**6) if Path(r.source).name in names],
                       desc=f"scans {half}", unit="video"):
        query = Path(record.source).name
        result = engine.query_by_id(record.id, explain=True)
        for rank, r in enumerate(result["results"]):
            target = Path(r["source"]).name
            rows.append({"query": query, "family": "collection scan", "target": target, "rank": rank,
                         "label": int(target in split.near_duplicates(query)), "evidence": r["evidence"]})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows))
    return rows


def label(query: dict, target: str) -> int | None:
    """1: `target` is a copy of the query's content (its original or a natural near-duplicate of it), 0:
    unrelated, None: neither, left out. Neither are the background clip of an inset, insertion or
    compilation query, with the clips that share its scene or hold a copy of it (a natural group across
    both folders), and the clips that share the original's scene or hold a trim of it without being its
    labelled copies."""
    if target in query["relevant"]:
        return 1
    unclear = {n for other in _ignored(query) for n in split.look_alikes(other) | split.near_duplicates(other)}
    unclear |= split.look_alikes(query["original"]) | split.near_duplicates(query["original"])
    return None if target in unclear else 0


def database(half: int) -> Engine:
    """The shared clips of permissive/ and one half of more/ (split.more_half), indexed: the fit searches the
    database with half 0 (diverse unrelated clips as negatives), the test the one with half 1, so that the
    test's distractors are clips the fit never saw."""
    engine = cached_engine(f"calibration-{half}")
    paths = [split.SHARED / "permissive" / n for n in split.all_clips()]
    paths += [split.SHARED / "more" / f for f in split.more_half(half)]
    for path, outcome in tqdm(engine.index_many(paths), total=len(paths), desc=f"index {half}", unit="video"):
        if isinstance(outcome, Exception):
            raise RuntimeError(f"{path}: {outcome}")
    engine.save()
    return engine


def held_out_queries() -> list[dict]:
    """The fit's queries: every edit family on the validation originals of both folds (train clips)."""
    out = []
    for fold in range(split.FOLDS):
        out += build_queries(originals=split.validation_query_originals(fold),
                             folder="validation" + (f"-{fold}" if fold else ""), families=SEGMENT_FAMILIES)
    return out


def reliability(labels: np.ndarray, probs: np.ndarray, bins: int = 10) -> tuple[float, list[tuple]]:
    """Expected calibration error over `bins` equal-width bins, and per bin (low, high, count, mean
    confidence, share of copies)."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probs, edges[1:-1]), 0, bins - 1)
    ece, per_bin = 0.0, []
    for b in range(bins):
        mask = which == b
        if not mask.any():
            per_bin.append((edges[b], edges[b + 1], 0, float("nan"), float("nan")))
            continue
        mean_p, share = float(probs[mask].mean()), float(labels[mask].mean())
        ece += mask.sum() / len(probs) * abs(mean_p - share)
        per_bin.append((edges[b], edges[b + 1], int(mask.sum()), mean_p, share))
    return float(ece), per_bin


def matrix(rows: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    x = np.array([[r["evidence"][f] for f in conf.FEATURES] for r in rows], dtype=np.float64)
    return x, np.array([r["label"] for r in rows], dtype=np.float64)


def fit(rows: list[dict], model: str, fitted_on: str) -> conf.Calibration:
    """Logistic regression (scikit-learn, L2 with C = 1 on standardised evidence), its coefficients brought
    back to the raw evidence so that the engine needs no scaler. The two kinds of pair (edited-copy queries,
    collection scans) weigh the same in all, whatever their numbers: the map is calibrated for both, not
    for whichever has more pairs."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = matrix(rows)
    kinds = np.array([r["family"] == "collection scan" for r in rows])
    weights = np.where(kinds, len(rows) / (2 * max(1, kinds.sum())), len(rows) / (2 * max(1, (~kinds).sum())))
    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x), y, sample_weight=weights)
    coefficients = regression.coef_[0] / scaler.scale_
    bias = float(regression.intercept_[0] - (coefficients * scaler.mean_).sum())
    return conf.Calibration(model=model, weights=tuple(float(w) for w in coefficients), bias=bias,
                            fitted_on=fitted_on)


def probabilities(calibration: conf.Calibration, rows: list[dict]) -> np.ndarray:
    return np.array([calibration.confidence(r["evidence"]) for r in rows])


def precision_recall(labels: np.ndarray, probs: np.ndarray, level: float) -> tuple[float, float, int]:
    kept = probs >= level
    tp = float((labels[kept] == 1).sum())
    return (tp / kept.sum() if kept.any() else float("nan"), tp / max(1.0, labels.sum()), int(kept.sum()))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a share: honest error bars for the bins with a handful of pairs."""
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def plot(per_bin: list[tuple], ece: float, path: Path) -> bool:
    """The reliability diagram: mean confidence against the share of copies per bin, with the bins' sizes."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed (pip install -e '.[bench]'): no reliability diagram")
        return False
    fig, (ax, counts) = plt.subplots(2, 1, figsize=(5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    filled = [b for b in per_bin if b[2]]
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1, label="perfect calibration")
    low, high = zip(*(wilson(round(b[4] * b[2]), b[2]) for b in filled))
    means, shares = [b[3] for b in filled], [b[4] for b in filled]
    ax.errorbar(means, shares, yerr=[np.maximum(0, np.subtract(shares, low)), np.maximum(0, np.subtract(high, shares))],
                fmt="o", capsize=3,
                label=f"test pairs (ECE {ece:.3f}), 95% interval")
    ax.set_ylabel("share of pairs that are copies")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    ax.set_title("Reliability of the calibrated confidence")
    counts.bar([(b[0] + b[1]) / 2 for b in filled], [b[2] for b in filled], width=0.09, log=True)
    counts.set_xlabel("confidence (bins of 0.1)")
    counts.set_ylabel("pairs")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--no-write", action="store_true", help="print only: no asset, section or plot written")
    parser.add_argument("--out", type=Path, default=conf.SHIPPED, help="where the fitted map goes (default: the "
                        "shipped model/assets/confidence.json; the engine reads another with HAPVR_CONFIDENCE_MAP)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    fit_db, test_db = database(0), database(1)
    held_out = collect(fit_db, held_out_queries(), "held-out") + collection_scans(fit_db, 0)
    test = collect(test_db, build_queries(families=SEGMENT_FAMILIES), "test")
    scans = collection_scans(test_db, 1)
    engine = fit_db
    queries = [r for r in held_out if r["family"] != "collection scan"]
    calibration = fit(held_out, engine.scoring_model,
                      f"{len(held_out)} pairs (top {engine.settings.top_k} results): {len(queries)} of "
                      f"{len({r['query'] for r in queries})} edited copies of "
                      f"{len(split.validation_query_originals(0)) + len(split.validation_query_originals(1))} train "
                      f"clips searched among {engine.store.count()} clips, and {len(held_out) - len(queries)} of "
                      f"the collection scans of the {len(split.more_half(0))} clips of `split.more_half(0)` "
                      f"(bench.copies.calibrate)")
    if not args.no_write:
        calibration.save(args.out)
    measured = {"edited-copy queries": test, "collection scans": scans}
    every = test + scans
    labels, probs = matrix(every)[1], probabilities(calibration, every)
    ece, per_bin = reliability(labels, probs)
    fit_ece = reliability(matrix(held_out)[1], probabilities(calibration, held_out))[0]
    plotted = not args.no_write and plot(per_bin, ece, DOCS / "calibration.png")
    write(measured, calibration, engine, fit_ece, plotted, args.no_write)


def write(measured: dict[str, list[dict]], calibration, engine, fit_ece, plotted, no_write) -> None:
    test, scans = measured["edited-copy queries"], measured["collection scans"]
    every = test + scans
    labels, probs = matrix(every)[1], probabilities(calibration, every)
    ece, per_bin = reliability(labels, probs)
    lines = [f"Measured on pairs the fit never saw, of two kinds. *Edited-copy queries*: every result the default "
             f"engine returns (top {engine.settings.top_k}) for the {len({r['query'] for r in test})} test queries "
             f"of the copy benchmark (every edit family and the compilation family on the test originals, and the "
             f"natural near-duplicates), {len(test)} pairs. *Collection scans*: what `hapvr duplicates` scores, "
             f"each of the {len(split.more_half(1))} clips of `split.more_half(1)` searched with its stored "
             f"features, {len(scans)} pairs; unrelated clips of one scene (one table and camera, two cameras, "
             f"adjacent excerpts of one shot) count as unrelated. The database: the 57 clips of permissive/ and "
             f"the half of more/ the fit did not search. Engine: {engine_config(engine)}.", "",
             f"**Expected calibration error {ece:.3f}** on all {len(every)} of them (target ≤ 0.05; ten "
             f"equal-width bins, weighted by their pairs); "
             + "; ".join(f"{name} {reliability(matrix(rows)[1], probabilities(calibration, rows))[0]:.3f}"
                         for name, rows in measured.items())
             + f"; {fit_ece:.3f} on the pairs it was fitted on.", ""]
    rows = [[f"{low:.1f}-{high:.1f}", count, "-" if not count else f"{mean:.3f}", "-" if not count else f"{share:.3f}"]
            for low, high, count, mean, share in per_bin]
    lines += [table(["confidence", "pairs", "mean confidence", "share that are copies"], rows), ""]
    rows = []
    for name, pairs in measured.items():
        y, p = matrix(pairs)[1], probabilities(calibration, pairs)
        for level in LEVELS:
            precision, recall, kept = precision_recall(y, p, level)
            rows.append([name, f"≥ {level:g}", kept, int(y.sum()), f"{precision:.3f}", f"{recall:.3f}"])
    lines += [table(["pairs", "min_confidence", "pairs kept", "copies", "precision", "recall"], rows), "",
              "Recall is over the copies among the returned results: a copy the search does not return at all (it "
              "is below the top results) has no confidence to filter (the retrieval section measures those).", ""]
    probs_test = probabilities(calibration, test)
    fam_rows = []
    for family in sorted({r["family"] for r in test if r["label"]}):
        subset = [i for i, r in enumerate(test) if r["family"] == family and r["label"]]
        negatives = [i for i, r in enumerate(test) if r["family"] == family and not r["label"]]
        fam_rows.append([family, len(subset), f"{np.median(probs_test[subset]):.3f}",
                         f"{(probs_test[subset] >= 0.5).mean():.2f}", f"{(probs_test[subset] >= 0.9).mean():.2f}",
                         f"{max(probs_test[negatives], default=0.0):.3f}"])
    lines += ["Per family of the edited-copy queries (copies found in the top results; the highest confidence of an "
              "unrelated result of the same queries):", "",
              table(["family", "copies", "median confidence", "≥ 0.5", "≥ 0.9", "highest unrelated"], fam_rows), ""]
    weights = ", ".join(f"{name} {w:+.2f}" for name, w in zip(conf.FEATURES, calibration.weights))
    lines += [f"The map: {calibration.method} (indexer/confidence.py), fitted on {calibration.fitted_on}; "
              f"weights {weights}, bias {calibration.bias:+.2f}; written to model/assets/confidence.json for "
              f"model `{calibration.model}` (the engine's model without the encoder's precision)."]
    if plotted:
        lines += ["", "![reliability diagram](calibration.png)"]
    publish("calibration", "Calibrated confidence", "python -m bench.copies.calibrate", "\n".join(lines), no_write)


if __name__ == "__main__":
    main()
