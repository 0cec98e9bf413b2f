"""The coarse stage's vector index on Milvus (pymilvus): `HAPVR_VECTORS=milvus://host:19530/collection` for
a Milvus server or cluster that every process shares, or a local file path (`/data/vectors.db`) for
milvus-lite, which runs inside one process (each process then keeps its own, as with FAISS).

Like the FAISS index (indexer/coarse.py) it holds one descriptor per sampled frame under the packed id
seq << 20 | frame, and is derived from the catalog: `sync()` applies the catalog's deletion log and adds
the rows committed since. What it has caught up to (the highest seq, the deletion generation, and the
catalog's identity) is kept in a small state collection beside the vectors, so processes sharing a Milvus
share it. Adding is an upsert and deleting is by seq, both idempotent, so two processes catching up at
once only repeat each other's work; a state written by the slower one can only be older, which costs
another catch-up, never a lost video.
"""
from __future__ import annotations

import logging
from urllib.parse import urlsplit

import numpy as np

from indexer.coarse import FRAME_BITS, FRAME_MASK, frame_descriptors, pack_ids
from indexer.errors import InputError

log = logging.getLogger(__name__)

#: Milvus answers at most this many neighbours per query vector
MAX_LIMIT = 16384
BATCH = 4096  # rows per insert call


class MilvusIndex:
    def __init__(self, url: str, store, dims: int = 512):
        from pymilvus import MilvusClient
        from pymilvus.exceptions import MilvusException

        self.store, self.dims = store, dims
        self._seen: tuple[int, int] | None = None  # (max seq, deletion generation) the index was last seen to hold
        parts = urlsplit(url)
        try:
            if parts.scheme == "milvus":
                self.collection = parts.path.strip("/") or "hapvr_frames"
                self.location = url
                self.client = MilvusClient(uri=f"http://{parts.netloc}", timeout=10)
                self.index_type = "AUTOINDEX"
            else:  # a local file: milvus-lite
                self.collection, self.location = "hapvr_frames", url
                self.client = MilvusClient(url)
                self.index_type = "FLAT"
            self.state = f"{self.collection}_state"
            self._open()
        except MilvusException as exc:
            raise InputError("backend_unavailable", f"vector index {url}: {exc.message}") from None
        except (OSError, ValueError, RuntimeError) as exc:
            raise InputError("backend_unavailable", f"vector index {url}: {exc}") from None

    # ----- collections
    def _open(self) -> None:
        from pymilvus import DataType, MilvusClient

        if self.client.has_collection(self.collection):
            fields = self.client.describe_collection(self.collection)["fields"]
            dims = next((f["params"].get("dim") for f in fields if f["name"] == "vec"), None)
            if dims is not None and int(dims) != self.dims:
                raise InputError("backend_unavailable", f"vector index {self.location}: collection {self.collection} "
                                 f"holds {dims}-dimensional vectors, the engine's frame descriptors have {self.dims}")
        else:
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("seq", DataType.INT64)
            schema.add_field("vec", DataType.FLOAT_VECTOR, dim=self.dims)
            params = self.client.prepare_index_params()
            params.add_index(field_name="vec", index_type=self.index_type, metric_type="IP")
            if self.index_type != "FLAT":  # deletes filter on seq (milvus-lite has no scalar indexes)
                params.add_index(field_name="seq", index_type="INVERTED")
            self.client.create_collection(self.collection, schema=schema, index_params=params,
                                          consistency_level="Strong")
        if not self.client.has_collection(self.state):
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("max_seq", DataType.INT64)
            schema.add_field("del_gen", DataType.INT64)
            schema.add_field("catalog", DataType.VARCHAR, max_length=64)
            schema.add_field("v", DataType.FLOAT_VECTOR, dim=2)  # Milvus wants a vector in every collection
            params = self.client.prepare_index_params()
            params.add_index(field_name="v", index_type="FLAT", metric_type="L2")
            self.client.create_collection(self.state, schema=schema, index_params=params, consistency_level="Strong")
        self.client.load_collection(self.collection)
        self.client.load_collection(self.state)
        max_seq, del_gen, catalog = self._read_state()
        identity = self.store.catalog.identity()
        if catalog not in (None, identity):
            log.warning("%s was built for another catalog: emptying it", self.location)
            self.client.delete(self.collection, filter="seq >= 0")
            self._write_state(0, 0, identity)
        elif catalog is None:
            self._write_state(0, 0, identity)

    def _read_state(self) -> tuple[int, int, str | None]:
        rows = self.client.query(self.state, filter="id == 0", output_fields=["max_seq", "del_gen", "catalog"],
                                 consistency_level="Strong")
        if not rows:
            return 0, 0, None
        return int(rows[0]["max_seq"]), int(rows[0]["del_gen"]), rows[0]["catalog"]

    def _write_state(self, max_seq: int, del_gen: int, catalog: str | None = None) -> None:
        catalog = catalog or self.store.catalog.identity()
        self.client.upsert(self.state, [{"id": 0, "max_seq": max_seq, "del_gen": del_gen, "catalog": catalog,
                                         "v": [0.0, 0.0]}])

    # ----- keeping up with the catalog
    def sync(self) -> int:
        """Catch up with the catalog. The catalog is asked first (two cheap reads): when it has nothing beyond
        what this process last saw the index hold, Milvus is not asked at all."""
        if self._seen is not None:
            seen_seq, seen_gen = self._seen
            if self.store.max_seq() <= seen_seq and not self.store.deletions_after(seen_gen)[0]:
                return 0
        max_seq, del_gen, _ = self._read_state()
        removed, gen = self.store.deletions_after(del_gen)
        for start in range(0, len(removed), 500):
            chunk = removed[start : start + 500]
            self.client.delete(self.collection, filter=f"seq in {[int(s) for s in chunk]}")
        new = self.store.seqs_after(max_seq)
        rows: list[dict] = []
        for seq, video_id in new:
            try:
                feats = self.store.load_features(video_id)
            except KeyError:  # deleted between the two reads; its deletion comes next sync
                continue
            for pid, vec in zip(pack_ids(seq, len(feats)).tolist(), frame_descriptors(feats)):
                rows.append({"id": pid, "seq": seq, "vec": vec.tolist()})
            if len(rows) >= BATCH:
                self.client.upsert(self.collection, rows)
                rows = []
        if rows:
            self.client.upsert(self.collection, rows)
        if new or removed:
            # sealed segments are searched through the index; growing ones by a slow scan (3.6 s against
            # 0.36 s for 60 query frames over 60k vectors in milvus-lite)
            self.client.flush(self.collection)
            self._write_state(new[-1][0] if new else max_seq, gen)
        self._seen = (new[-1][0] if new else max_seq, gen)
        return len(new) + len(removed)

    def add_vectors(self, vectors: np.ndarray, ids: np.ndarray, max_seq: int) -> None:
        """Bulk path for synthetic benchmarks: precomputed descriptors under packed ids, then the state says
        the index is caught up to `max_seq`."""
        for start in range(0, len(ids), BATCH):
            chunk = ids[start : start + BATCH]
            self.client.insert(self.collection, [{"id": int(i), "seq": int(i) >> FRAME_BITS, "vec": v.tolist()}
                                                 for i, v in zip(chunk, vectors[start : start + BATCH])])
        self.client.flush(self.collection)
        _, del_gen, _ = self._read_state()
        self._write_state(max_seq, del_gen)

    def save(self) -> None:
        """Nothing to do: Milvus persists every write (and flushes on its own)."""

    # ----- search
    def search(self, descriptors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tq x D query frame descriptors -> (scores, video seqs, frame indices), each Tq x k (seq -1: none)."""
        n = len(descriptors)
        k = min(k, MAX_LIMIT)
        hits = self.client.search(self.collection, data=np.asarray(descriptors, dtype=np.float32).tolist(), limit=k,
                                  anns_field="vec", search_params={"metric_type": "IP"}, output_fields=[],
                                  consistency_level="Strong")
        width = max((len(h) for h in hits), default=0)
        scores = np.zeros((n, width), dtype=np.float32)
        ids = np.full((n, width), -1, dtype=np.int64)
        for row, found in enumerate(hits):
            for col, hit in enumerate(found):
                scores[row, col], ids[row, col] = hit["distance"], hit["id"]
        seqs = np.where(ids >= 0, ids >> FRAME_BITS, -1)
        return scores, seqs, np.where(ids >= 0, ids & FRAME_MASK, -1)

    @property
    def size(self) -> int:
        return int(self.client.get_collection_stats(self.collection)["row_count"])

    @property
    def kind(self) -> str:
        return f"milvus ({self.index_type.lower()})"
