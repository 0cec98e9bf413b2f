"""Fit and measure the calibrated confidence: `python -m bench.copies.calibrate [--no-write]`.

The engine's `confidence` is a probability that a (query, result) pair is a copy, mapped from what the
engine measures for that pair (indexer/confidence.py). The map is fitted here on *held-out* pairs only:
the benchmark's edit families applied to the train originals (both validation folds of
`bench.copies.split`, every clip of varied content of the train split), searched against the whole
database with the default engine; every result the engine returns at the default top-k is one pair,
labelled a copy when it is the query's original (or its natural near-duplicate), unrelated otherwise.
The background clip of an inset, insertion or compilation query and the clips that share its scene
(`split.look_alikes`) are neither and are left out, as in the retrieval benchmark.

It is then measured on the test queries (test originals, never seen by the fit): expected calibration
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
    """One row per (query, returned result): the engine's measurements of the pair and its label (1 copy,
    0 unrelated). Cached per model version and query set under bench/out/copies/calibration."""
    key = zlib.crc32(json.dumps([engine.model_version, sorted(q["path"] for q in queries),
                                 engine.settings.top_k]).encode()) & 0xFFFFFFFF
    cache = OUT / "calibration" / f"{desc.replace(' ', '-')}-{key:08x}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    names = {r.id: Path(r.source).name for r in engine.store.list(limit=10**6)}
    rows = []
    for q in tqdm(queries, desc=desc, unit="query"):
        emb = engine.embed(q["path"], mirrored=engine.settings.query_flip)
        result = engine.search(emb.features, emb.timestamps, emb.info.duration, mirrored=emb.mirrored,
                               explain=True)
        skip = {n for other in _ignored(q) for n in split.look_alikes(other)} - set(q["relevant"])
        for rank, r in enumerate(result["results"]):
            name = names[r["id"]]
            if name in skip or (name in split.look_alikes(q["original"]) and name not in q["relevant"]):
                continue
            rows.append({"query": q["path"], "family": q["family"], "target": name, "rank": rank,
                         "label": int(name in q["relevant"]), "evidence": r["evidence"]})
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows))
    return rows


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
    back to the raw evidence so that the engine needs no scaler."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = matrix(rows)
    scaler = StandardScaler().fit(x)
    regression = LogisticRegression(C=1.0, max_iter=1000).fit(scaler.transform(x), y)
    weights = regression.coef_[0] / scaler.scale_
    bias = float(regression.intercept_[0] - (weights * scaler.mean_).sum())
    return conf.Calibration(model=model, weights=tuple(float(w) for w in weights), bias=bias,
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
    ax.errorbar(means, shares, yerr=[np.subtract(shares, low), np.subtract(high, shares)], fmt="o", capsize=3,
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
    engine = cached_engine("db")
    for name in tqdm(split.all_clips(), desc="index", unit="video"):
        engine.index(split.SHARED / "permissive" / name)
    engine.save()
    held_out = collect(engine, held_out_queries(), "held-out")
    test = collect(engine, build_queries(families=SEGMENT_FAMILIES), "test")
    n_queries = len({r["query"] for r in held_out})
    calibration = fit(held_out, engine.scoring_model,
                      f"{len(held_out)} pairs (top {engine.settings.top_k} results) of {n_queries} edited copies of "
                      f"{len(split.validation_query_originals(0)) + len(split.validation_query_originals(1))} train "
                      f"clips (bench.copies.calibrate)")
    if not args.no_write:
        calibration.save(args.out)
    labels, probs = matrix(test)[1], probabilities(calibration, test)
    ece, per_bin = reliability(labels, probs)
    fit_ece = reliability(matrix(held_out)[1], probabilities(calibration, held_out))[0]
    plotted = not args.no_write and plot(per_bin, ece, DOCS / "calibration.png")
    write(test, labels, probs, ece, fit_ece, per_bin, calibration, engine, plotted, args.no_write)


def write(test, labels, probs, ece, fit_ece, per_bin, calibration, engine, plotted, no_write) -> None:
    n_queries = len({r["query"] for r in test})
    lines = [f"Every result the default engine returns (top {engine.settings.top_k}) for the {n_queries} test "
             f"queries of the copy benchmark (every edit family and the compilation family on the test "
             f"originals, and the natural near-duplicates) is one pair: {len(test)} pairs, {int(labels.sum())} of "
             f"them copies. Engine: {engine_config(engine)}.", "",
             f"**Expected calibration error {ece:.3f}** on these test pairs (target ≤ 0.05; ten equal-width "
             f"bins, weighted by their pairs); {fit_ece:.3f} on the held-out pairs it was fitted on.", ""]
    rows = [[f"{low:.1f}-{high:.1f}", count, "-" if not count else f"{mean:.3f}", "-" if not count else f"{share:.3f}"]
            for low, high, count, mean, share in per_bin]
    lines += [table(["confidence", "pairs", "mean confidence", "share that are copies"], rows), ""]
    rows = []
    for level in LEVELS:
        precision, recall, kept = precision_recall(labels, probs, level)
        rows.append([f"≥ {level:g}", kept, f"{precision:.3f}", f"{recall:.3f}"])
    lines += [table(["min_confidence", "pairs kept", "precision", "recall"], rows), "",
              "Recall is over the copies among the returned results: a copy the search does not return at all (it "
              "is below the top results) has no confidence to filter (the retrieval section measures those).", ""]
    fam_rows = []
    families = sorted({r["family"] for r in test if r["label"]})
    for family in families:
        subset = [i for i, r in enumerate(test) if r["family"] == family and r["label"]]
        negatives = [i for i, r in enumerate(test) if r["family"] == family and not r["label"]]
        fam_rows.append([family, len(subset), f"{np.median(probs[subset]):.3f}",
                         f"{(probs[subset] >= 0.5).mean():.2f}", f"{(probs[subset] >= 0.9).mean():.2f}",
                         f"{max(probs[negatives], default=0.0):.3f}"])
    lines += ["Per family (copies found in the top results; the highest confidence of an unrelated result of the "
              "same queries):", "", table(["family", "copies", "median confidence", "≥ 0.5", "≥ 0.9",
                                           "highest unrelated"], fam_rows), ""]
    weights = ", ".join(f"{name} {w:+.2f}" for name, w in zip(conf.FEATURES, calibration.weights))
    lines += [f"The map: {calibration.method} (indexer/confidence.py), fitted on {calibration.fitted_on}; "
              f"weights {weights}, bias {calibration.bias:+.2f}; written to model/assets/confidence.json for "
              f"model `{calibration.model}` (the engine's model without the encoder's precision)."]
    if plotted:
        lines += ["", "![reliability diagram](calibration.png)"]
    publish("calibration", "Calibrated confidence", "python -m bench.copies.calibrate", "\n".join(lines), no_write)


if __name__ == "__main__":
    main()
