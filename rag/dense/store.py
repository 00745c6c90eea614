"""The vector store interface the ingest and the dense retriever use, whatever engine is behind it.

Two engines implement it: :class:`rag.dense.qdrant_store.QdrantStore` (qdrant-client: a Qdrant server or
cluster, or the pure-Python local mode) and :class:`rag.dense.edge_store.EdgeStore` (Qdrant's Rust engine in
process, qdrant-edge). Both keep one collection of points with the named vectors ``full`` and
``d64``/``d128``/``d256`` (:mod:`rag.dense.matryoshka`), content-addressed string ids and the payload
``{chunk_id, doc_id, tenant, metadata}``; a filter is a qdrant-client ``models.Filter`` (the server's
vocabulary, which the edge engine translates).

A store created with ``lexical=True`` also holds the sparse vector ``lexical`` with Qdrant's IDF modifier:
the scaled-out BM25 index (:mod:`rag.bm25.sparse` makes the vectors). Its points are upserted with a
sparse vector each and searched with :meth:`VectorStore.search_sparse`; a store without it works as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import numpy as np
from qdrant_client import models

from rag.dense.matryoshka import MATRYOSHKA_DIMS

FULL = "full"
LEXICAL = "lexical"  # the sparse vector of a store created with lexical=True


class SparseVector(NamedTuple):
    """Term ids (ascending, unique, unsigned 32-bit) and their weights."""

    indices: list[int]
    values: list[float]


def vector_name(dims: int | None) -> str:
    return FULL if dims is None else f"d{dims}"


def full_vector(stored: Any) -> np.ndarray | None:
    """The ``full`` vector of a retrieved point's named vectors (either engine's record), or None."""
    vector = stored.get(FULL) if isinstance(stored, dict) else None
    return None if vector is None else np.asarray(vector, dtype=np.float32)


def prefix_dims(full_dim: int) -> tuple[int, ...]:
    """The Matryoshka prefixes stored next to a ``full_dim`` vector."""
    return tuple(d for d in MATRYOSHKA_DIMS if d < full_dim)


def check_sparse(lexical: bool, n: int, sparse: Sequence[SparseVector] | None) -> None:
    """An upsert into a lexical store carries one sparse vector per point, into any other none."""
    if lexical and sparse is None:
        raise ValueError("the store has a lexical sparse vector: upsert needs one sparse vector per point")
    if not lexical and sparse is not None:
        raise ValueError("the store has no lexical sparse vector (lexical=False): upsert got sparse vectors")
    if sparse is not None and len(sparse) != n:
        raise ValueError(f"ids ({n}) and sparse vectors ({len(sparse)}) differ")


class VectorStore(Protocol):
    # where the index version this store holds is recorded (rag.index.shard_sync); None: unknown, always
    # compared in full
    sync_record: Path | None
    # True: only this process reads the store (the embedded engine locks its folder), so each process
    # brings its own to the version it serves; False: shared (a server), the ingest writes it for all
    per_process: bool
    lexical: bool
    """Whether the collection has the ``lexical`` sparse vector (fixed when it is created)."""

    def ensure_collection(self, full_dim: int) -> None:
        """Create the collection for ``full_dim`` vectors unless it exists."""

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored."""

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        payloads: Sequence[dict[str, Any]],
        sparse: Sequence[SparseVector] | None = None,
    ) -> None:
        """Store rotated, normalised full vectors (the prefixes are derived) with their payloads, and
        with ``sparse`` vectors exactly when the store is ``lexical`` (an empty one is not stored: the
        point stays out of the IDF statistics, which engines otherwise count differently)."""

    def stored_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The full vectors stored for those of ``ids`` the store has (as upserted: rotated, normalised)."""

    def delete(self, ids: Iterable[str]) -> None: ...

    def optimize(self) -> None:
        """Make the writes so far durable and indexed (may block); the ingest calls it when done writing."""

    def all_ids(self) -> set[str]: ...

    def count(self) -> int: ...

    def search(
        self,
        query: np.ndarray,
        *,
        limit: int,
        dims: int | None = None,
        prefetch: int = 200,
        rescore: bool = True,
        query_filter: models.Filter | None = None,
    ) -> list[tuple[str, float]]:
        """(point id, cosine) of the nearest points, best first (see ``QdrantStore.search``)."""

    def search_sparse(
        self, query: SparseVector, *, limit: int, query_filter: models.Filter | None = None
    ) -> list[tuple[str, float]]:
        """(point id, score) of the best points by the ``lexical`` vector, best first: the dot product
        with ``query`` after the IDF modifier weighs each query term. Only points scoring above 0 (that
        share a term with the query). Raises ``ValueError`` on a store that is not ``lexical``."""

    def close(self) -> None: ...
