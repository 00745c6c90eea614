"""Vectors in Qdrant's Rust engine, embedded in this process (``qdrant-edge-py``, pinned: it is beta).

One shard per collection, on disk in its own folder: the named vectors ``full`` and ``d64``/``d128``/
``d256`` (cosine), keyword payload indexes on ``tenant`` (``is_tenant``) and ``acl``, and HNSW on
segments past the indexing threshold (built by :meth:`EdgeStore.optimize`, which the ingest calls when it
is done writing); smaller segments, and every search with ``exact=True``, are scored exhaustively — the
same ranking as qdrant-client's local mode. Searches run concurrently (the engine is thread-safe); writes
are serialised.

The folder holds a ``layout.json`` naming the engine and the layout version: a folder without it (a
qdrant-client local-mode folder, say) or with another layout is refused with the command that rebuilds it.
It also records whether the shard has the ``lexical`` sparse vector (``lexical=True``: BM25 in the engine,
see :mod:`rag.bm25.sparse`); absent means no, as in every folder written before it.
"""

from __future__ import annotations

import fcntl
import json
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import IO, Any, Literal

import numpy as np
import qdrant_edge as qe
from qdrant_client import models

from rag.dense.matryoshka import truncate
from rag.dense.store import FULL, LEXICAL, SparseVector, check_sparse, full_vector, prefix_dims, vector_name
from rag.errors import RagError

LAYOUT_FILE = "layout.json"
ENGINE = "qdrant-edge"
# bump when the shard's vectors, payload or indexes change: older folders are then refused (re-ingest)
LAYOUT_VERSION = 1
SHARD_DIR = "shard"
SYNC_RECORD = "synced.json"  # the index version the shard holds (rag.index.shard_sync)
MAX_SLOTS = 64  # processes that may serve one collection from one data dir (each with its own shard)
REBUILD_HINT = "delete the folder and run `rag ingest PATH` again (or set RAG_VECTOR_ENGINE=local)"

# HNSW as Qdrant's server defaults it; segments under INDEXING_THRESHOLD_KB stay plain (exhaustive)
HNSW_M = 16
HNSW_EF_CONSTRUCT = 100
FULL_SCAN_THRESHOLD_KB = 10_000  # a filtered search over fewer matching points' KB than this scans them
INDEXING_THRESHOLD_KB = 10_000  # ~6.5k points of 384 floats: SciFact-sized collections stay exact
QUANT_QUANTILE = 0.99  # int8 range: the 0.99 quantile of the values (outliers clipped), Qdrant's usual choice
QUANT_OVERSAMPLING = 2.0  # int8 candidates fetched per result, then rescored on the float32 originals


class EdgeLayoutError(RagError, RuntimeError):
    """The folder holds vectors this engine or layout version cannot read."""


class SlotInUse(RagError, RuntimeError):
    """Another process holds this shard folder (the engine's lock on its write-ahead log)."""


class EdgeStore:
    """One collection in an embedded edge shard at ``path`` (see the module docstring).

    ``hnsw=False`` keeps every segment plain (exact search); ``indexing_threshold_kb`` sets the segment
    size past which :meth:`optimize` builds HNSW; ``hnsw_ef`` the search beam (None: the engine's).
    ``quantization="int8"``: every named vector also stored as int8 (scalar quantization, the 0.99
    quantile as the range) and searched that way in RAM; the float32 originals move to disk (``Cold``)
    and rescore the candidates (``QUANT_OVERSAMPLING`` × the limit). Fixed at creation (``layout.json``).
    ``lexical=True``: the shard also holds the ``lexical`` sparse vector (IDF modifier); fixed at creation
    too (``layout.json``)."""

    def __init__(
        self,
        path: Path,
        *,
        hnsw: bool = True,
        indexing_threshold_kb: int = INDEXING_THRESHOLD_KB,
        hnsw_ef: int | None = None,
        quantization: Literal["none", "int8"] = "none",
        lexical: bool = False,
    ) -> None:
        if indexing_threshold_kb < 1:
            raise ValueError(f"indexing_threshold_kb must be at least 1, got {indexing_threshold_kb}")
        self.path = path
        self.sync_record: Path | None = path / SYNC_RECORD
        self.per_process = True  # the engine locks the folder to this process
        self._slot_lock: IO[str] | None = None  # held by open_slot for the store's life
        self.hnsw = hnsw
        self.indexing_threshold_kb = indexing_threshold_kb
        if quantization not in ("none", "int8"):
            raise ValueError(f"quantization must be 'none' or 'int8', got {quantization!r}")
        self.quantization = quantization
        self.lexical = lexical
        rescore = (
            qe.QuantizationSearchParams(rescore=True, oversampling=QUANT_OVERSAMPLING)
            if quantization == "int8"
            else None
        )
        self._params = qe.SearchParams(exact=not hnsw, hnsw_ef=hnsw_ef, quantization=rescore)
        # the reference for recall: the float32 originals, every point
        ignore = qe.QuantizationSearchParams(ignore=True) if quantization == "int8" else None
        self._exact = qe.SearchParams(exact=True, quantization=ignore)
        self._write = threading.Lock()
        self._dirty = False
        self._low_dims: tuple[int, ...] = ()
        self._shard: qe.EdgeShard | None = None
        layout = read_layout(path)
        if layout is not None:
            stored = layout.get("quantization", "none")
            if stored != quantization:
                raise EdgeLayoutError(
                    f"{path} holds vectors with quantization {stored!r}, the settings ask for "
                    f"{quantization!r} (RAG_EDGE_QUANTIZATION); {REBUILD_HINT}"
                )
            if bool(layout.get("lexical", False)) != lexical:
                raise EdgeLayoutError(
                    f"{path} holds a shard {'with' if not lexical else 'without'} the lexical sparse vector, "
                    f"this store was opened with lexical={lexical}; {REBUILD_HINT}"
                )
            self._low_dims = prefix_dims(int(layout["full_dim"]))
            self._shard = _load(path, self._config(int(layout["full_dim"])))

    def _config(self, full_dim: int) -> qe.EdgeConfig:
        quantized = self.quantization == "int8"
        # quantized: the int8 copies are what searches scan (in RAM); the float32 originals, read only to
        # rescore candidates, are left to the page cache
        memory = qe.Memory.Cold if quantized else None
        vectors = {FULL: qe.EdgeVectorParams(size=full_dim, distance=qe.Distance.Cosine, memory=memory)}
        for d in prefix_dims(full_dim):
            vectors[vector_name(d)] = qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine, memory=memory)
        # an indexing threshold of 0 turns HNSW off (Qdrant's convention): every segment stays plain
        threshold = self.indexing_threshold_kb if self.hnsw else 0
        return qe.EdgeConfig(
            vectors=vectors,
            sparse_vectors=(
                {LEXICAL: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)} if self.lexical else None
            ),
            hnsw_config=qe.HnswIndexConfig(
                m=HNSW_M, ef_construct=HNSW_EF_CONSTRUCT, full_scan_threshold=FULL_SCAN_THRESHOLD_KB
            ),
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=threshold),
            quantization_config=(
                qe.ScalarQuantizationConfig(
                    qe.ScalarType.Int8, quantile=QUANT_QUANTILE, memory=qe.Memory.Cached
                )
                if quantized
                else None
            ),
        )

    @classmethod
    def open_slot(cls, base: Path, **options: Any) -> EdgeStore:
        """This process's own shard of the collection whose first shard is ``base``: the first slot no
        other process holds — ``base`` itself, then ``<base>.replica-1``, ``-2``… (a flock on
        ``<slot>.lock``, held until :meth:`close`). Each process fills and follows its slot from the index
        versions (:mod:`rag.index.shard_sync`), so several processes serve one data dir; a restarted one
        takes a free slot back and catches up from what it already holds."""
        base.parent.mkdir(parents=True, exist_ok=True)
        for k in range(MAX_SLOTS):
            path = base if k == 0 else base.with_name(f"{base.name}.replica-{k}")
            lock = path.with_name(path.name + ".lock").open("a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            try:
                store = cls(path, **options)
            except SlotInUse:  # held by a process that takes no slot lock (older code)
                lock.close()
                continue
            except BaseException:
                lock.close()
                raise
            store._slot_lock = lock
            return store
        raise RuntimeError(f"all {MAX_SLOTS} shard slots of {base} are in use by other processes")

    @property
    def shard(self) -> qe.EdgeShard:
        if self._shard is None:
            raise RuntimeError(f"no collection at {self.path} yet: ensure_collection(dim) creates it")
        return self._shard

    def ensure_collection(self, full_dim: int) -> None:
        with self._write:
            if self._shard is not None:
                layout = read_layout(self.path)
                if layout is not None and int(layout["full_dim"]) != full_dim:
                    raise EdgeLayoutError(
                        f"{self.path} holds {layout['full_dim']}-dimensional vectors, the embedder makes "
                        f"{full_dim}; {REBUILD_HINT}"
                    )
                return
            self.path.mkdir(parents=True, exist_ok=True)
            shard = qe.EdgeShard.create(str(self.path / SHARD_DIR), self._config(full_dim))
            shard.update(
                qe.UpdateOperation.create_field_index("tenant", qe.KeywordIndexParams(is_tenant=True))
            )
            # document ACLs (rag.acl): an array of keyword entries; a shard created before this index
            # filters on ``acl`` all the same, scanning the tenant's points
            shard.update(qe.UpdateOperation.create_field_index("acl", qe.KeywordIndexParams()))
            shard.flush()
            write_layout(self.path, full_dim, self.quantization, lexical=self.lexical)
            self._low_dims = prefix_dims(full_dim)
            self._shard = shard

    def existing(self, ids: Sequence[str]) -> set[str]:
        if self._shard is None:
            return set()
        found: set[str] = set()
        for start in range(0, len(ids), 1000):
            batch: list[qe.PointId] = list(ids[start : start + 1000])
            records = self.shard.retrieve(batch, with_payload=False, with_vector=False)
            found.update(_point_id(r.id) for r in records)
        return found

    def stored_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if self._shard is None:
            return found
        for start in range(0, len(ids), 1000):
            batch: list[qe.PointId] = list(ids[start : start + 1000])
            for r in self.shard.retrieve(batch, with_payload=False, with_vector=[FULL]):
                vector = full_vector(r.vector)
                if vector is not None:
                    found[_point_id(r.id)] = vector
        return found

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        sparse: Sequence[SparseVector] | None = None,
    ) -> None:
        if not (len(ids) == len(vectors) == len(payloads)):
            raise ValueError(f"ids ({len(ids)}), vectors ({len(vectors)}), payloads ({len(payloads)}) differ")
        check_sparse(self.lexical, len(ids), sparse)
        named: dict[str, list[list[float]]] = {FULL: np.asarray(vectors, dtype=np.float32).tolist()}
        for d in self._low_dims:
            named[vector_name(d)] = truncate(vectors, d).tolist()
        points = []
        for i, pid in enumerate(ids):
            point_vectors: dict[str, qe.NamedVector] = {name: rows[i] for name, rows in named.items()}
            if sparse is not None and sparse[i].indices:  # no terms: no vector, outside the IDF corpus
                point_vectors[LEXICAL] = qe.SparseVector(sparse[i].indices, sparse[i].values)
            points.append(qe.Point(pid, point_vectors, payloads[i]))
        with self._write:
            self.shard.update(qe.UpdateOperation.upsert_points(points))
            self._dirty = True

    def delete(self, ids: Iterable[str]) -> None:
        if self._shard is None:
            return
        id_list: list[qe.PointId] = list(ids)
        for start in range(0, len(id_list), 1000):
            with self._write:
                self.shard.update(qe.UpdateOperation.delete_points(id_list[start : start + 1000]))
                self._dirty = True

    def optimize(self) -> None:
        """Make the writes durable and build HNSW where segments outgrew the indexing threshold (blocks;
        the ingest calls it when done writing). Searches meanwhile see every point."""
        with self._write:
            if self._shard is None or not self._dirty:
                return
            self._shard.flush()
            self._shard.optimize()
            self._dirty = False

    def all_ids(self) -> set[str]:
        if self._shard is None:
            return set()
        ids: set[str] = set()
        offset: qe.PointId | None = None
        while True:
            records, offset = self.shard.scroll(
                qe.ScrollRequest(offset=offset, limit=1000, with_payload=False, with_vector=False)
            )
            ids.update(_point_id(r.id) for r in records)
            if offset is None:
                return ids

    def count(self) -> int:
        return 0 if self._shard is None else int(self.shard.count(qe.CountRequest(exact=True)))

    def search(
        self,
        query: np.ndarray,
        *,
        limit: int,
        dims: int | None = None,
        prefetch: int = 200,
        rescore: bool = True,
        query_filter: models.Filter | None = None,
        exact: bool = False,
    ) -> list[tuple[str, float]]:
        """As :meth:`rag.dense.qdrant_store.QdrantStore.search`; ``exact=True`` scores every point
        (the reference HNSW is measured against)."""
        if limit < 1:
            raise ValueError(f"limit must be greater than 0, got {limit}")
        if self._shard is None:
            return []
        params = self._exact if exact else self._params
        flt = edge_filter(query_filter)
        full = qe.Query.Nearest(np.asarray(query, dtype=np.float32).tolist(), using=FULL)
        if dims is None or dims >= query.shape[-1]:
            request = qe.QueryRequest(limit=limit, query=full, filter=flt, params=params, with_payload=False)
        else:
            low = qe.Query.Nearest(truncate(query, dims).tolist(), using=vector_name(dims))
            if not rescore:
                request = qe.QueryRequest(
                    limit=limit, query=low, filter=flt, params=params, with_payload=False
                )
            else:
                request = qe.QueryRequest(
                    limit=limit,
                    query=full,
                    prefetches=[
                        qe.Prefetch(limit=max(prefetch, limit), query=low, filter=flt, params=params)
                    ],
                    with_payload=False,
                )
        return [(_point_id(p.id), float(p.score)) for p in self._shard.query(request)]

    def search_sparse(
        self, query: SparseVector, *, limit: int, query_filter: models.Filter | None = None
    ) -> list[tuple[str, float]]:
        """As :meth:`rag.dense.store.VectorStore.search_sparse` (the engine's sparse index is exact)."""
        if limit < 1:
            raise ValueError(f"limit must be greater than 0, got {limit}")
        if not self.lexical:
            raise ValueError(f"the store at {self.path} has no lexical sparse vector (lexical=False)")
        if self._shard is None or not query.indices:
            return []
        request = qe.QueryRequest(
            limit=limit,
            query=qe.Query.Nearest(qe.SparseVector(query.indices, query.values), using=LEXICAL),
            filter=edge_filter(query_filter),
            with_payload=False,
        )
        return [(_point_id(p.id), float(p.score)) for p in self._shard.query(request) if p.score > 0]

    def close(self) -> None:
        with self._write:
            if self._shard is not None:
                self._shard.flush()
                self._shard.close()
                self._shard = None
            if self._slot_lock is not None:
                self._slot_lock.close()  # releases the flock
                self._slot_lock = None


def _load(path: Path, config: qe.EdgeConfig) -> qe.EdgeShard:
    try:
        return qe.EdgeShard.load(str(path / SHARD_DIR), config)
    except Exception as exc:  # the binding raises a bare Exception; its WAL lock says "WouldBlock"
        if "WouldBlock" not in str(exc):
            raise
        raise SlotInUse(
            f"the embedded Qdrant folder {path} is in use by another process (the edge engine allows one "
            "process per folder); stop that process, or open it with EdgeStore.open_slot"
        ) from None


def _point_id(pid: qe.PointId) -> str:
    # ids are uuid5 strings (rag.index.versions.point_id); the engine hands them back as UUID objects or
    # strings, and str() of either is the canonical lower-case hyphenated form the snapshot keys use
    return str(pid)


def read_layout(path: Path) -> dict[str, Any] | None:
    """The folder's layout record; None for a missing or empty folder. Raises :class:`EdgeLayoutError`
    for a folder this engine did not write, or an older layout."""
    if not path.exists() or not any(path.iterdir()):
        return None
    marker = path / LAYOUT_FILE
    if not marker.is_file():
        raise EdgeLayoutError(
            f"{path} holds vectors in another layout (no {LAYOUT_FILE}: a qdrant-client local-mode folder?); "
            f"{REBUILD_HINT}"
        )
    layout: dict[str, Any] = json.loads(marker.read_text())
    if layout.get("engine") != ENGINE or layout.get("layout") != LAYOUT_VERSION:
        raise EdgeLayoutError(
            f"{path} holds vectors written by {layout.get('engine')!r} layout {layout.get('layout')!r}, this "
            f"version reads {ENGINE!r} layout {LAYOUT_VERSION}; {REBUILD_HINT}"
        )
    return layout


def write_layout(path: Path, full_dim: int, quantization: str = "none", *, lexical: bool = False) -> None:
    record: dict[str, Any] = {"engine": ENGINE, "layout": LAYOUT_VERSION, "full_dim": full_dim}
    if quantization != "none":  # absent = none, as every folder written before quantization
        record["quantization"] = quantization
    if lexical:  # absent = no sparse vector, as every folder written before it
        record["lexical"] = True
    tmp = path / (LAYOUT_FILE + ".tmp")
    tmp.write_text(json.dumps(record, sort_keys=True) + "\n")
    tmp.replace(path / LAYOUT_FILE)


def edge_filter(flt: models.Filter | None) -> qe.Filter | None:
    """The qdrant-client filter in the edge engine's classes: ``must`` / ``should`` / ``must_not`` of
    nested filters and field conditions matching a value or any of several (what
    :func:`rag.retrieval.filters.qdrant_filter` builds). Anything else raises ``TypeError``."""
    if flt is None:
        return None
    return qe.Filter(
        must=_conditions(flt.must), should=_conditions(flt.should), must_not=_conditions(flt.must_not)
    )


def _conditions(conditions: Any) -> list[qe.ConditionType] | None:
    if conditions is None:
        return None
    items = conditions if isinstance(conditions, list) else [conditions]
    return [_condition(c) for c in items]


def _condition(condition: Any) -> qe.ConditionType:
    if isinstance(condition, models.Filter):
        nested = edge_filter(condition)
        assert nested is not None
        return nested
    if isinstance(condition, models.IsEmptyCondition):  # missing, null or [] (a chunk with no ACL)
        return qe.IsEmptyCondition(condition.is_empty.key)
    if isinstance(condition, models.FieldCondition) and condition.match is not None:
        match = condition.match
        if isinstance(match, models.MatchValue):
            return qe.FieldCondition(key=condition.key, match=qe.MatchValue(match.value))
        if isinstance(match, models.MatchAny):
            return qe.FieldCondition(key=condition.key, match=qe.MatchAny(match.any))
    raise TypeError(f"the edge store cannot translate the filter condition {condition!r}")
