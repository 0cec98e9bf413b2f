"""Search: the coarse stage over the vector index, the HAP-VR re-rank of the candidates, then segments and
the calibrated confidence of the returned results; and one indexed pair explained (`compare`)."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from config.settings import Settings
from indexer import confidence as conf
from indexer.coarse import frame_descriptors
from indexer.contracts import VectorIndex
from indexer.embedding import Embedder
from indexer.errors import InputError
from indexer.explain import matrix_view
from indexer.ingest import sha256_file
from indexer.models import Models
from indexer.segments import align
from indexer.store import Store, VideoRecord


class Searcher:
    """Thread-safe; `lock` guards the vector index's catch-up (shared with the engine's writes)."""

    #: the `note` of a query whose every frame is blank: no results, and why
    BLANK_QUERY = "every sampled frame of the query is blank (black, a fade or flat colour): no evidence to match"

    def __init__(self, settings: Settings, models: Models, embedder: Embedder, store: Store, coarse: VectorIndex,
                 lock: threading.RLock):
        self.settings, self.models, self.embedder = settings, models, embedder
        self.store, self.coarse, self._lock = store, coarse, lock

    def query(self, path: str | Path, top_k: int | None = None, min_score: float | None = None,
              label: str | None = None, min_confidence: float | None = None, explain: bool = False,
              matrices: bool = False) -> dict:
        """Embed a video file and search; the CLI/API JSON shape (`matrices`: see `search`).

        The file is hashed too (about 0.2 s per GB, little next to decoding and embedding it): an indexed
        file with the same bytes is reported as an exact duplicate, confidence 1, first, even when the
        query has no evidence to search with (every frame blank).
        """
        path = Path(path)
        if not path.is_file():
            raise InputError("not_found", f"{path}: no such file")
        t0 = time.perf_counter()
        sha = sha256_file(path)
        hash_ms = (time.perf_counter() - t0) * 1000
        emb = self.embedder.embed(path, mirrored=self.settings.query_flip)
        if emb.blank:
            result = {"results": [], "note": self.BLANK_QUERY, "timings_ms": {}}
        else:
            result = self.search(emb.features, emb.timestamps, emb.info.duration, top_k, min_score,
                                 mirrored=emb.mirrored, min_confidence=min_confidence, sha256=sha, explain=explain,
                                 matrices=matrices)
        twin = self.store.by_sha256(sha)
        if twin is not None and not any(r.get("exact_duplicate") for r in result["results"]):
            # left out by a filter, or nothing to search with: the same bytes are still the same video
            result["results"] = [self._exact_result(twin), *result["results"]][: top_k or self.settings.top_k]
        result["timings_ms"] = {"hash": round(hash_ms, 1), **{k: round(v, 1) for k, v in emb.timings_ms.items()},
                                **result["timings_ms"]}
        result["timings_ms"]["total"] = round(sum(v for k, v in result["timings_ms"].items() if k != "total"), 1)
        return {"query": label or str(path), **result}

    @staticmethod
    def _exact_result(record: VideoRecord) -> dict:
        """The result of an indexed file with the query's bytes that the search did not return: no score was
        computed (`score` null), the whole of both timelines is the segment."""
        whole = {"query_start": 0.0, "query_end": round(record.duration, 3), "target_start": 0.0,
                 "target_end": round(record.duration, 3), "score": 1.0}
        return {"id": record.id, "source": record.source, "score": None, "confidence": 1.0, "coarse_score": None,
                "mirrored": False, "segments": [whole], "exact_duplicate": True}

    def query_by_id(self, video_id: str, top_k: int | None = None, min_score: float | None = None,
                    min_confidence: float | None = None, explain: bool = False, matrices: bool = False) -> dict:
        """Search with an indexed video's stored features; the video itself is left out."""
        record = self.store.get(video_id)
        if record is None:
            raise InputError("not_found", f"no indexed video with id {video_id}")
        feats = torch.from_numpy(np.asarray(self.store.load_features(video_id), dtype=np.float32))
        result = self.search(feats, record.timestamps, record.duration, top_k, min_score, exclude_seq=record.seq,
                             min_confidence=min_confidence, explain=explain, matrices=matrices)
        return {"query": video_id, **result}

    def search(self, features: torch.Tensor, timestamps: np.ndarray, duration: float, top_k: int | None = None,
               min_score: float | None = None, exclude_seq: int | None = None,
               mirrored: torch.Tensor | None = None, min_confidence: float | None = None,
               sha256: str | None = None, explain: bool = False, max_candidates: int | None = None,
               learned_candidates: int | None = None, frame_neighbours: int | None = None,
               matrices: bool = False) -> dict:
        """Coarse FAISS stage, HAP-VR re-rank of the candidates, then segments and confidence for the
        returned results.

        With `mirrored` (the query's flipped frames), every stage keeps, per
        target, the better of the two orientations. `min_confidence` skips
        results below it (the next candidates take their place, up to
        `top_k`); `sha256` is the query file's: an indexed file with the same
        bytes is an exact duplicate, confidence 1. `explain` adds each
        result's evidence (indexer/confidence.py). `max_candidates` overrides
        HAPVR_CANDIDATES (and bounds the cascade), `learned_candidates` the
        cascade's HAPVR_RERANK_CASCADE (never below `top_k`), `frame_neighbours`
        HAPVR_FRAME_NEIGHBOURS. `matrices` adds each result's frame-to-frame matrix, its segments drawn on
        it and aligned frame pairs (indexer/explain.py: what the web UI's Compare view shows).
        """
        top_k = self.settings.top_k if top_k is None else top_k
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        views = [features] if mirrored is None else [features, mirrored]
        with self._lock:
            self.coarse.sync()
            ranked = coarse_candidates(self.coarse, [frame_descriptors(v.cpu().numpy()) for v in views],
                                       frame_neighbours or self.settings.frame_neighbours, exclude_seq,
                                       max_candidates or self.settings.candidates)
        candidates = [(seq, score) for seq, score, _ in ranked]
        orientation = {seq: v for seq, _, v in ranked}
        t1 = time.perf_counter()
        timings["coarse"] = (t1 - t0) * 1000
        records = self.store.by_seqs([seq for seq, _ in candidates])
        candidates = [(seq, coarse) for seq, coarse in candidates if seq in records]
        # fp16 memory maps, not copies: the re-ranker reads each once while casting it into its batch
        targets = [torch.from_numpy(self.store.load_features(records[seq].id)) for seq, _ in candidates]
        t2 = time.perf_counter()
        timings["load"] = (t2 - t1) * 1000
        fine, f2f = np.zeros(len(targets)), [None] * len(targets)
        # with a Chamfer share, its plain S^F is what segments need: the cascade computes it once, first
        cascade = self.models.network.learned and bool(self.models.network.chamfer_mix)
        cascade_size = self.settings.rerank_cascade if learned_candidates is None else learned_candidates
        keep = max(cascade_size, top_k) if cascade_size else None
        if keep is not None and max_candidates is not None:
            keep = min(keep, max(max_candidates, top_k))
        for v, view in enumerate(views):
            chosen = [j for j, (seq, _) in enumerate(candidates) if orientation[seq] == v]
            if not chosen:
                continue
            chosen_targets = [targets[j] for j in chosen]
            if cascade:
                # `keep` is shared by the orientations in proportion to their candidates
                share = None if keep is None else max(top_k, -(-keep * len(chosen) // len(candidates)))
                scores_v, f2f_v = self.models.network.cascade_similarity(view.to(self.models.device), chosen_targets, share)
            else:
                scores_v, f2f_v = self.models.network.similarity(view.to(self.models.device), chosen_targets)
            for j, score, sim in zip(chosen, scores_v.cpu().numpy(), f2f_v):
                fine[j], f2f[j] = score, sim
        if self.models.network.uses_comparator:
            fine = (fine + 1) / 2  # Hardtanh output in [-1, 1] -> [0, 1], the scale training uses (affine: same ranking)
        t3 = time.perf_counter()
        timings["rerank"] = (t3 - t2) * 1000
        order = np.argsort(-fine, kind="stable")
        calibration = self.models.calibration
        results = []
        for idx in order:
            if min_score is not None and fine[idx] < min_score:
                break
            if len(results) >= top_k or not np.isfinite(fine[idx]):  # -inf: left out by the cascade
                break
            record = records[candidates[idx][0]]
            view = orientation[candidates[idx][0]]
            # the untrained network's and the cascade's S^F are already plain cosine; attended ones are not
            sim = (f2f[idx].cpu().numpy() if not self.models.network.learned or cascade
                   else self.frame_matrix(views[view], targets[idx]))
            alignment = align(sim, timestamps, record.timestamps, duration, record.duration)
            segments = [s.as_dict() for s in alignment.segments]
            ev = conf.evidence(fine[idx], candidates[idx][1], segments, duration, record.duration, sim)
            confidence = None if calibration is None else round(calibration.confidence(ev), 4)
            exact = sha256 is not None and record.sha256 == sha256
            if exact:
                confidence = 1.0
            if min_confidence is not None and (confidence or 0.0) < min_confidence:
                continue
            result = {"id": record.id, "source": record.source, "score": round(float(fine[idx]), 4),
                      "confidence": confidence, "coarse_score": round(float(candidates[idx][1]), 4),
                      "mirrored": view == 1, "segments": segments}
            if exact:
                result["exact_duplicate"] = True
            if alignment.reason:
                result["segments_reason"] = alignment.reason
            if explain:
                result["evidence"] = {k: round(v, 4) for k, v in ev.items()}
            if matrices:
                result["matrix"] = matrix_view(sim, timestamps, record.timestamps, segments)
            results.append(result)
        timings["segments"] = (time.perf_counter() - t3) * 1000
        return {"results": results, "timings_ms": {k: round(v, 1) for k, v in timings.items()}}

    def compare(self, query_id: str, target_id: str) -> dict:
        """One indexed pair, explained: the HAP-VR score, confidence, segments and the frame-to-frame matrix
        (indexer/explain.py), from the two videos' stored features as they are (a query by id has no mirrored
        view either)."""
        query, target = self.store.get(query_id), self.store.get(target_id)
        for name, record, wanted in (("video_id", query, query_id), ("other_id", target, target_id)):
            if record is None:
                raise InputError("not_found", f"{name}: no indexed video with id {wanted}")
        q = torch.from_numpy(np.asarray(self.store.load_features(query.id), dtype=np.float32))
        t = torch.from_numpy(np.asarray(self.store.load_features(target.id), dtype=np.float32))
        with torch.inference_mode():
            score = float(self.models.network.similarity(q.to(self.models.device), [t])[0].cpu().numpy()[0])
        if self.models.network.uses_comparator:
            score = (score + 1) / 2
        sim = self.frame_matrix(q, t)
        alignment = align(sim, query.timestamps, target.timestamps, query.duration, target.duration)
        segments = [s.as_dict() for s in alignment.segments]
        coarse = float(np.clip(sim.max(axis=1), 0, None).mean()) if sim.size else 0.0
        ev = conf.evidence(score, coarse, segments, query.duration, target.duration, sim)
        confidence = 1.0 if query.sha256 == target.sha256 else (
            None if self.models.calibration is None else round(self.models.calibration.confidence(ev), 4))
        out = {"query": query.public(), "target": target.public(), "score": round(score, 4),
               "confidence": confidence, "segments": segments,
               "matrix": matrix_view(sim, query.timestamps, target.timestamps, segments)}
        if alignment.reason:
            out["segments_reason"] = alignment.reason
        return out

    def frame_matrix(self, query: torch.Tensor, target: torch.Tensor) -> np.ndarray:
        """The plain-cosine frame-to-frame matrix S^F of a query view and a target's stored features: what
        segments are found on. Attention scales every region vector by its weight, so the matrix is taken on
        unattended features, and the aligner's thresholds mean the same with and without a checkpoint."""
        sim = self.models.network.frame_to_frame(F.normalize(query.float(), dim=-1).to(self.models.device),
                                          F.normalize(target.float(), dim=-1).unsqueeze(0).to(self.models.device))[0]
        return sim.cpu().numpy()


def coarse_candidates(index: VectorIndex, views: list[np.ndarray], neighbours: int, exclude_seq: int | None,
                      limit: int) -> list[tuple[int, float, int]]:
    """The coarse stage: (video seq, coarse score, view) of the `limit` best videos, best first.

    `views` are the query's frame descriptors per orientation (the query, then its mirror), searched in
    one call: one pass over the index's lists for all their frames (0.86 of the time of two calls at 10k
    videos). A video's coarse score is that of its better view (`aggregate`).
    """
    scores, seqs, _ = index.search(np.concatenate(views), neighbours)
    bounds = np.cumsum([len(v) for v in views])[:-1]
    best: dict[int, tuple[float, int]] = {}
    for v, (view_scores, view_seqs) in enumerate(zip(np.split(scores, bounds), np.split(seqs, bounds))):
        for seq, score in aggregate(view_scores, view_seqs, exclude_seq):
            if seq not in best or score > best[seq][0]:
                best[seq] = (score, v)
    ranked = sorted(best.items(), key=lambda item: -item[1][0])[:limit]
    return [(seq, score, v) for seq, (score, v) in ranked]


def aggregate(scores: np.ndarray, seqs: np.ndarray, exclude_seq: int | None) -> list[tuple[int, float]]:
    """Per video: sum over query frames of its best neighbour score (>= 0), / Tq; best first."""
    if seqs.size == 0:
        return []
    tq = len(seqs)
    rows = np.repeat(np.arange(tq), seqs.shape[1])
    flat_seqs, flat_scores = seqs.ravel(), np.clip(scores.ravel(), 0, None)
    keep = (flat_seqs >= 0) & (flat_seqs != (-2 if exclude_seq is None else exclude_seq))
    rows, flat_seqs, flat_scores = rows[keep], flat_seqs[keep], flat_scores[keep]
    videos, inverse = np.unique(flat_seqs, return_inverse=True)
    best = np.zeros((len(videos), tq), dtype=np.float32)
    np.maximum.at(best, (inverse, rows), flat_scores)
    totals = best.sum(axis=1) / tq
    order = np.argsort(-totals, kind="stable")
    return [(int(videos[i]), float(totals[i])) for i in order]
