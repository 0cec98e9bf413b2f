"""The copy-detection benchmark: `python -m bench.copies.run` (or `make bench`).

Builds the edited-copy queries of the test originals (cached in bench/out/copies), indexes every
shared clip, scores every query against the whole database with each system, and writes per-family
mAP / μAP / recall@1, segment IoU and timings to docs/BENCHMARKS.md (plus a PNG plot).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
import zlib
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bench import videoedit as ve
from bench.copies import split
from bench.copies.families import FAMILIES, make_family
from bench.copies.peers import all_peers
from bench.metrics import summary
from bench.report import engine_config, publish, table
from indexer.engine import Engine
from config.settings import Settings
from model.checkpoint import load_similarity
from model.similarity import HAPVRSimilarity

OUT = Path(__file__).resolve().parents[1] / "out" / "copies"
DOCS = Path(__file__).resolve().parents[2] / "docs"
log = logging.getLogger("bench.copies")
#: bumped when the cached queries must be rebuilt: 2 = copied spans in the metadata, sources with frame gaps
#: resampled without being sped up (bench.videoedit.read_clip)
QUERY_VERSION = 2


def cached_engine(name: str, **settings) -> Engine:
    """An engine whose store is kept between runs under OUT, one folder per model version: a run with
    other encoder settings (side, precision, PCA, checkpoint) indexes into its own folder."""
    engine = Engine(Settings(data=OUT / name, **settings))
    digest = zlib.crc32(engine.model_version.encode()) & 0xFFFFFFFF
    return Engine(engine.settings.model_copy(update={"data": OUT / f"{name}-{digest:08x}"}))


def build_queries(max_seconds: float = 60.0, originals: list[str] | None = None,
                  folder: str = "queries", families: list[str] | None = None) -> list[dict]:
    """Write (once) every family's query for every test original; returns their descriptions.

    `families` defaults to the retrieval benchmark's FAMILIES. `originals` (with their own `folder`) makes the
    same families of other clips: the validation
    queries of `bench.copies.mix` are made of train clips. Natural near-duplicates are test queries only.
    """
    shared = split.SHARED / "permissive"
    train = split.train_split()
    queries: list[dict] = []
    for original in tqdm(originals or split.test_originals(), desc=folder, unit="original"):
        clip = None
        others = [name for name in train if name != original]  # all of train for a test original
        for family in families or FAMILIES:
            path = OUT / folder / family / f"{Path(original).stem}.mp4"
            meta_path = path.with_suffix(".json")
            meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
            if meta.get("version") != QUERY_VERSION:
                if clip is None:
                    clip = ve.read_clip(shared / original, max_side=480, fps=10)
                    clip = ve.Clip(clip.frames[: int(max_seconds * clip.fps)], clip.fps)
                seed = zlib.crc32(f"{family}/{original}".encode())
                rng = np.random.default_rng(seed)
                other_name = others[int(rng.integers(len(others)))]
                other = ve.read_clip(shared / other_name, max_side=480, fps=10)
                q = make_family(family, clip, rng, other)
                ve.write_clip(q.clip, path, crf=26, bitrate=q.bitrate)
                meta = {"family": family, "original": original, "truth": q.truth, "spans": q.spans,
                        "other": other_name, "seed": seed, "version": QUERY_VERSION}
                meta_path.write_text(json.dumps(meta))
            queries.append({**meta, "path": str(path), "relevant": sorted(split.same_content(original))})
    if originals is not None:
        return queries
    for group in split.NATURAL_GROUPS.values():
        for member in group[1:]:
            # a natural near-duplicate's copied spans are not known: it has no "spans", segment scores skip it
            queries.append({"family": "natural", "original": group[0], "truth": {}, "path": str(shared / member),
                            "relevant": sorted(set(group) - {member}), "self": member})
    return queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--no-peers", action="store_true")
    parser.add_argument("--checkpoint", action="append", default=[], metavar="NAME=PATH",
                        help="also score with this similarity checkpoint (exhaustive); repeatable")
    parser.add_argument("--ablation", action="append", default=[], metavar="NAME=PATH",
                        help="a checkpoint of the training ablation: scored, reported in its own section")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(2)
    queries = build_queries()
    shared = split.SHARED / "permissive"
    database = split.all_clips()

    # raw encoder features (no attention): the untrained Chamfer baseline and any checkpoint's input
    raw = cached_engine("db-raw", use_checkpoint=False)
    ours = cached_engine("db")
    if not ours.network.learned:
        ours = raw
    index_s = None  # timed only when this run indexes the database (it is kept between runs)
    for engine in {id(raw): raw, id(ours): ours}.values():
        t0 = time.perf_counter()
        created = sum(engine.index(shared / name).created for name in tqdm(database, desc="index", unit="video"))
        engine.save()
        if engine is ours and created == len(database):
            index_s = (time.perf_counter() - t0) / len(database)
    by_id = {r.id: Path(r.source).name for r in ours.store.list(limit=10**6)}
    raw_feats = {Path(r.source).name: torch.from_numpy(np.array(raw.store.load_features(r.id))).float()
                 for r in raw.store.list(limit=10**6)}
    nets: dict[str, HAPVRSimilarity] = {"untrained Chamfer": HAPVRSimilarity(learned=False)}
    if ours.network.learned:
        nets["trained HAP-VR (exhaustive)"] = ours.network
    for item in args.checkpoint + args.ablation:
        label, path = item.split("=", 1)
        nets[label] = load_similarity(path)[0]
    ablation = [item.split("=", 1)[0] for item in args.ablation]
    names = list(raw_feats)
    indexed = {label: [net.index_video(raw_feats[n]) for n in names] for label, net in nets.items()}

    systems: dict[str, dict[str, dict[str, float]]] = {"ours": {}, "ours, FAISS coarse only": {},
                                                       **{label: {} for label in nets}}
    timings: dict[str, list[float]] = {name: [] for name in systems}
    ious: dict[str, list[float]] = {"excerpt": [], "insertion": []}
    for q in tqdm(queries, desc="search", unit="query"):
        qid = q["path"]
        start = time.perf_counter()
        emb = ours.embed(q["path"], mirrored=ours.settings.query_flip)
        embed_ms = (time.perf_counter() - start) * 1000
        start = time.perf_counter()
        result = ours.search(emb.features, emb.timestamps, emb.info.duration, top_k=len(database),
                             mirrored=emb.mirrored)
        timings["ours"].append(embed_ms + (time.perf_counter() - start) * 1000)
        systems["ours"][qid] = {by_id[r["id"]]: r["score"] for r in result["results"]}
        systems["ours, FAISS coarse only"][qid] = {by_id[r["id"]]: r["coarse_score"] for r in result["results"]}
        timings["ours, FAISS coarse only"].append(embed_ms + result["timings_ms"]["coarse"])
        q_raw = raw.embed(q["path"]).features if ours is not raw else emb.features
        for label, net in nets.items():
            start = time.perf_counter()
            scores, _ = net.similarity(net.index_video(q_raw), indexed[label])
            systems[label][qid] = dict(zip(names, scores.tolist()))
            timings[label].append(embed_ms + (time.perf_counter() - start) * 1000)
        if q["family"] in ious:
            best = next((r for r in result["results"] if by_id[r["id"]] == q["original"]), None)
            seg = best["segments"][0] if best and best["segments"] else None
            ious[q["family"]].append(_iou(seg, q["truth"], q["family"]) if seg else 0.0)
        for ignored in _ignored(q):  # neither positive nor negative: see _ignored
            for scores in systems.values():
                scores[qid].pop(ignored, None)

    peer_rows = []
    if not args.no_peers:
        for peer in all_peers():
            if peer.why_unavailable:
                peer_rows.append(f"- {peer.name}: not run ({peer.why_unavailable})")
                continue
            try:
                start = time.perf_counter()
                sigs = {name: peer.signature(shared / name) for name in tqdm(database, desc=peer.name)}
                per_video = (time.perf_counter() - start) / len(database)
                scores, spent = {}, []
                for q in tqdm(queries, desc=peer.name):
                    start = time.perf_counter()
                    sig = peer.signature(Path(q["path"]))
                    scores[q["path"]] = {n: peer.similarity(sig, s) for n, s in sigs.items() if n not in _ignored(q)}
                    spent.append((time.perf_counter() - start) * 1000)
            except Exception as exc:  # noqa: BLE001 - a broken peer is reported, not fatal
                peer_rows.append(f"- {peer.name}: failed on our clips ({type(exc).__name__}: {str(exc)[:120]})")
                continue
            systems[peer.name], timings[peer.name] = scores, spent
            peer_rows.append(f"- {peer.name}: {per_video * 1000:.0f} ms per database video to sign")
    if ablation:
        write_ablation(queries, {name: systems[name] for name in ["untrained Chamfer", *ablation]}, args.no_write)
    main_table = {name: scores for name, scores in systems.items() if name not in ablation}
    write_report(queries, main_table, timings, ious, index_s, peer_rows, args.no_write, engine_config(ours))


def worst_family(queries: list[dict], scores: dict, base: dict) -> tuple[float, str]:
    """(mAP change, family) of the family whose mAP fell most from `base` to `scores`; families without
    queries (validation queries have no natural near-duplicates) are skipped."""
    database = split.all_clips()
    relevant = {q["path"]: set(q["relevant"]) for q in queries}
    worst, worst_name = 1.0, ""
    for family in FAMILIES + ["natural"]:
        subset = [q["path"] for q in queries if q["family"] == family]
        if not subset:
            continue
        delta = (summary({p: scores[p] for p in subset}, relevant, database)["mAP"]
                 - summary({p: base[p] for p in subset}, relevant, database)["mAP"])
        if delta < worst:
            worst, worst_name = delta, family
    return worst, worst_name


def write_ablation(queries, systems, no_write) -> None:
    database = split.all_clips()
    relevant = {q["path"]: set(q["relevant"]) for q in queries}
    base = "untrained Chamfer"
    rows = []
    for name, scores in systems.items():
        overall = summary(scores, relevant, database)
        worst, worst_family_name = worst_family(queries, scores, systems[base])
        rows.append([name, f"{overall['mAP']:.3f}", f"{overall['uAP']:.3f}", f"{overall['R@1']:.2f}",
                     f"{worst:+.3f} ({worst_family_name})"])
    body = table(["similarity", "mAP", "μAP", "R@1", "worst family mAP vs untrained"], rows)
    body += ("\n\nEvery variant: the train split, seed 0, the default budget of `hapvr train` (batch 8 sources = 16 "
             "clips, W = 28, 200 steps, lr 2e-4 with 20 warm-up steps, pixel ViV); only the loss changes. Scored "
             "exhaustively on the copy benchmark's test queries (section above). Commands: docs/TRAINING.md.")
    publish("ablation", "Training ablation (our scale)", "make bench-ablation", body, print_only=no_write)


def _ignored(query: dict) -> set[str]:
    """Database clips left out of a query's ranking: a natural near-duplicate used as a query is itself in
    the database, and a picture-in-picture or insertion query really contains its background clip (a
    train clip that is also in the database), so finding it is neither right nor wrong. So does the gap of a
    compilation query."""
    out = {query["self"]} if "self" in query else set()
    if query["family"] in ("pip", "reverse_pip", "insertion", "compilation") and query.get("other"):
        out.add(query["other"])
    return out


def _iou(seg: dict, truth: dict, family: str) -> float:
    key = "target" if family == "excerpt" else "query"
    a0, a1 = seg[f"{key}_start"], seg[f"{key}_end"]
    b0, b1 = truth[f"{key}_start"], truth[f"{key}_end"]
    inter = max(0.0, min(a1, b1) - max(a0, b0))
    union = max(a1, b1) - min(a0, b0)
    return inter / union if union > 0 else 0.0


def write_report(queries, systems, timings, ious, index_s, peer_rows, no_write, config: str) -> None:
    database = split.all_clips()
    families = FAMILIES + ["natural"]
    names = list(systems)
    relevant = {q["path"]: set(q["relevant"]) for q in queries}
    header = ["family", "queries"] + [f"{n} mAP / μAP / R@1" for n in names]
    rows, per_family_map = [], {n: [] for n in names}
    for family in families + ["all"]:
        subset = [q["path"] for q in queries if family in ("all", q["family"])]
        row: list[object] = [family, len(subset)]
        for n in names:
            m = summary({p: systems[n][p] for p in subset}, relevant, database)
            row.append(f"{m['mAP']:.3f} / {m['uAP']:.3f} / {m['R@1']:.2f}")
            if family != "all":
                per_family_map[n].append(m["mAP"])
        rows.append(row)
    body = table(header, rows)
    body += "\n\n" + table(["system", "ms per query (embed + search)"],
                           [[n, round(float(np.mean(timings[n])))] for n in names if timings[n]])
    indexing = (f"Indexing (decode + embed + store), ours: {index_s * 1000:.0f} ms per database video (57 clips, "
                f"581 s in all). " if index_s is not None else
                "Indexing speed: section \"Indexing throughput and disk\" (this run reused the indexed database). ")
    body += (f"\n\n{indexing}Segment localisation, ours: mean IoU of the reported target segment "
             f"for `excerpt` = {np.mean(ious['excerpt']):.2f}, of the reported query segment for `insertion` = "
             f"{np.mean(ious['insertion']):.2f}.\n")
    if peer_rows:
        body += "\nPeers:\n" + "\n".join(peer_rows) + "\n"
    body += ("\nThe background clip of a pip, reverse-pip or insertion query (a train clip, also in the database) "
             "is left out of that query's ranking: the query really contains it.")
    body += (f"\nDatabase: all 57 shared clips. Queries: {len(FAMILIES)} edit families x 15 test originals, generated "
             "deterministically by `bench/copies/families.py` (seeds from the family and file names), plus the "
             "5 natural near-duplicates. A query's positives are its original and that original's natural "
             "near-duplicate. Split and relevance: `bench/copies/split.py`. Plot: `docs/copies_map.png`.")
    body += f"\nEngine (ours): {config}."
    _plot(families, per_family_map)
    publish("copies", "Copy detection on real clips (per family)", "python -m bench.copies.run", body, print_only=no_write)


def _plot(families: list[str], per_family: dict[str, list[float]]) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(14, 4.5))
    width = 0.8 / max(1, len(per_family))
    for i, (name, values) in enumerate(per_family.items()):
        ax.bar(np.arange(len(families)) + i * width, values, width, label=name)
    ax.set_xticks(np.arange(len(families)) + 0.4 - width / 2, families, rotation=60, ha="right")
    ax.set_ylabel("mAP")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(DOCS / "copies_map.png", dpi=110)


if __name__ == "__main__":
    main()
