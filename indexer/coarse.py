"""The coarse stage: FAISS over one descriptor per sampled frame.

A frame's descriptor is the L2-normalised mean of its 9 (attention-weighted)
region vectors. FAISS ids pack (video seq, frame index) as seq << 20 | frame.

The index is derived data. It is saved as `faiss/coarse-<max_seq>-<del_gen>.index`
(atomic rename), i.e. the file name says which rows and deletions it holds;
`sync()` catches up with the catalog by adding newer videos and removing
deleted ones; `faiss/catalog` names the catalog it was built from. A crash at any point therefore costs at most some catch-up work.

Index type by size: exact inner product over fp16-compressed vectors
(`IndexScalarQuantizer` QT_fp16, 1 KB per frame) until `ivf_threshold`
frames (~5.5 video-hours at 1 fps; exact search over more is slow on a
small CPU: 60 query frames x 120k vectors took 150 ms here), then IVF with 8-bit scalar quantisation
(512 B per frame, nlist ~ 2*sqrt(N), HNSW coarse quantiser, nprobe
configurable). On a machine with FAISS GPU support the
search runs on a GPU copy.
"""
from __future__ import annotations

import logging
import math
import re
import time
from pathlib import Path

import faiss
import numpy as np

from indexer import failpoints
from indexer.store import Store

log = logging.getLogger(__name__)

FRAME_BITS = 20
FRAME_MASK = (1 << FRAME_BITS) - 1
FILE_RE = re.compile(r"coarse-(\d+)-(\d+)\.index$")


def frame_descriptors(features: np.ndarray) -> np.ndarray:
    """T x R x D region features -> T x D unit-norm float32 frame descriptors."""
    desc = np.asarray(features).mean(axis=1, dtype=np.float32)  # no float32 copy of all T x R x D regions
    norms = np.linalg.norm(desc, axis=1, keepdims=True)
    return desc / np.maximum(norms, 1e-12)


def pack_ids(seq: int, frames: int) -> np.ndarray:
    if frames > FRAME_MASK:
        raise ValueError(f"a video may have at most {FRAME_MASK} sampled frames")
    return (np.int64(seq) << FRAME_BITS) + np.arange(frames, dtype=np.int64)


def ivf_lists(n: int) -> int:
    """nlist ~ 2 sqrt(N), a power of two <= 16384, with at least 8 training points per list."""
    nlist = 2 ** int(np.clip(round(math.log2(max(2 * math.sqrt(max(n, 1)), 1))), 0, 14))
    while nlist > 1 and nlist * 8 > n:
        nlist //= 2
    return nlist


def build_ivf(vectors: np.ndarray, ids: np.ndarray, dims: int, train_per_list: int = 16) -> faiss.Index:
    """IVF-SQ8 over inner product, with an HNSW quantiser so adding millions of vectors stays fast.

    k-means runs 10 iterations on at most `train_per_list` x nlist sampled
    vectors: enough for a coarse stage whose recall is then set by nprobe.
    """
    nlist = ivf_lists(len(vectors))
    index = faiss.index_factory(dims, f"IVF{nlist}_HNSW32,SQ8", faiss.METRIC_INNER_PRODUCT)
    faiss.extract_index_ivf(index).cp.niter = 10
    rng = np.random.default_rng(0)
    take = min(len(vectors), nlist * train_per_list)
    index.train(np.ascontiguousarray(vectors[rng.choice(len(vectors), size=take, replace=False)], dtype=np.float32))
    for start in range(0, len(vectors), 262144):
        index.add_with_ids(np.ascontiguousarray(vectors[start : start + 262144], dtype=np.float32),
                           ids[start : start + 262144])
    return index


class CoarseIndex:
    def __init__(self, store: Store, dims: int = 512, ivf_threshold: int = 20_000, nprobe: int = 16,
                 use_gpu: bool | None = None):
        self.store = store
        self.dims = dims
        self.ivf_threshold = ivf_threshold
        self.nprobe = nprobe
        self.dir = store.root / "faiss"
        self.dir.mkdir(exist_ok=True)
        self._forget_other_catalogs()
        self.use_gpu = (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0) if use_gpu is None else use_gpu
        self._gpu_copy = None
        self.index, self.max_seq, self.del_gen = self._load()
        self.dirty = False
        self.sync()

    # ----- persistence
    def _forget_other_catalogs(self) -> None:
        """Index files built from another catalog (a recreated database, a data folder pointed at a new
        one) name rows that are not this catalog's: they go, and the index is rebuilt from the catalog."""
        marker, identity = self.dir / "catalog", self.store.catalog.identity()
        if marker.is_file() and marker.read_text().strip() == identity:
            return
        if marker.is_file():
            log.warning("%s was built for another catalog: rebuilding the coarse index", self.dir)
            for old in self.dir.glob("coarse-*.index"):
                old.unlink(missing_ok=True)
        tmp = self.dir / f".catalog-{time.time_ns()}"
        tmp.write_text(identity + "\n")
        tmp.replace(marker)

    def _new_flat(self) -> faiss.Index:
        return faiss.IndexIDMap2(faiss.IndexScalarQuantizer(self.dims, faiss.ScalarQuantizer.QT_fp16,
                                                            faiss.METRIC_INNER_PRODUCT))

    def _load(self) -> tuple[faiss.Index, int, int]:
        now = time.time()
        for stale in self.dir.glob(".tmp-*.index"):  # a save killed before its rename; young ones may be live
            if now - stale.stat().st_mtime > 600:
                stale.unlink(missing_ok=True)
        best: tuple[int, int, Path] | None = None
        for path in self.dir.glob("coarse-*.index"):
            m = FILE_RE.search(path.name)
            if m and (best is None or (int(m[1]), int(m[2])) > best[:2]):
                best = (int(m[1]), int(m[2]), path)
        if best is not None:
            try:
                return faiss.read_index(str(best[2])), best[0], best[1]
            except RuntimeError as exc:  # unreadable: rebuild from the store
                log.warning("ignoring unreadable FAISS file %s (%s)", best[2], exc)
        return self._new_flat(), 0, 0

    def save(self) -> None:
        """Persist atomically; older files are removed only after the new one is in place."""
        if not self.dirty:
            return
        path = self.dir / f"coarse-{self.max_seq}-{self.del_gen}.index"
        tmp = self.dir / f".tmp-{time.time_ns()}.index"
        try:
            faiss.write_index(self.index, str(tmp))
        except BaseException:  # a full disk: the index on disk stays the previous one (it is derived data)
            tmp.unlink(missing_ok=True)
            raise
        failpoints.reach("index_save")  # the new index written beside the old one, not yet in its place
        tmp.replace(path)
        for old in self.dir.glob("coarse-*.index"):
            if old != path:
                old.unlink(missing_ok=True)
        self.dirty = False

    # ----- keeping up with the store
    def sync(self) -> int:
        """Apply deletions and add videos committed since the index was last brought up to date."""
        removed, gen = self.store.deletions_after(self.del_gen)
        changed = 0
        for seq in removed:
            if seq <= self.max_seq:
                lo = seq << FRAME_BITS
                changed += self.index.remove_ids(faiss.IDSelectorRange(lo, lo + FRAME_MASK + 1)) > 0
        self.del_gen = gen
        new = self.store.seqs_after(self.max_seq)
        batch_vecs: list[np.ndarray] = []
        batch_ids: list[np.ndarray] = []
        for seq, video_id in new:
            try:
                feats = self.store.load_features(video_id)
            except KeyError:  # deleted between the two queries; its deletion comes next sync
                continue
            batch_vecs.append(frame_descriptors(feats))
            batch_ids.append(pack_ids(seq, len(feats)))
            if sum(len(v) for v in batch_vecs) >= 65536:
                self._add(np.concatenate(batch_vecs), np.concatenate(batch_ids))
                batch_vecs, batch_ids = [], []
        if batch_vecs:
            self._add(np.concatenate(batch_vecs), np.concatenate(batch_ids))
        if new:
            self.max_seq = new[-1][0]
        if new or removed:
            self.dirty = True
            self._gpu_copy = None
        if self.index.ntotal > self.ivf_threshold and not self.is_ivf:
            self._convert_to_ivf()
        return len(new) + changed

    def add_vectors(self, vectors: np.ndarray, ids: np.ndarray, max_seq: int) -> None:
        """Bulk path for synthetic benchmarks: add precomputed descriptors directly."""
        self._add(vectors, ids)
        self.max_seq = max(self.max_seq, max_seq)
        self.dirty = True
        self._gpu_copy = None

    def _add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self.index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), ids)

    @property
    def is_ivf(self) -> bool:
        return isinstance(faiss.downcast_index(self.index), faiss.IndexIVF)

    def _convert_to_ivf(self) -> None:
        """Move every vector into an IVF-SQ8 index (HNSW coarse quantiser) trained on a sample of them."""
        flat = faiss.downcast_index(self.index)
        ids = faiss.vector_to_array(flat.id_map).astype(np.int64)
        vectors = flat.index.reconstruct_n(0, flat.ntotal)
        log.info("coarse index reached %d frames: converting to IVF-SQ8", len(ids))
        self.index = build_ivf(vectors, ids, self.dims)
        self.dirty = True
        self._gpu_copy = None

    # ----- search
    def _searchable(self) -> faiss.Index:
        if self.is_ivf:
            faiss.extract_index_ivf(self.index).nprobe = self.nprobe
        if not self.use_gpu:
            return self.index
        if self._gpu_copy is None:
            self._gpu_copy = faiss.index_cpu_to_all_gpus(self.index)
        return self._gpu_copy

    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tq x D query frame descriptors -> (scores, video seqs, frame indices), each Tq x k (seq -1: none)."""
        if self.index.ntotal == 0:
            empty = np.zeros((len(descriptors), 0))
            return empty, empty.astype(np.int64), empty.astype(np.int64)
        k = min(k, self.index.ntotal)
        scores, ids = self._searchable().search(np.ascontiguousarray(descriptors, dtype=np.float32), k)
        seqs = np.where(ids >= 0, ids >> FRAME_BITS, -1)
        return scores, seqs, np.where(ids >= 0, ids & FRAME_MASK, -1)

    @property
    def size(self) -> int:
        return int(self.index.ntotal)

    @property
    def kind(self) -> str:
        return "ivf-sq8" if self.is_ivf else "flat-fp16"
