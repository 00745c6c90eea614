"""Vectors in Qdrant through qdrant-client: the same code for local mode on disk and a server/cluster URL.

Each point carries named vectors: ``full`` (the rotated embedding) and ``d64``/``d128``/``d256`` (its
normalised prefixes) for the Matryoshka funnel, and in a collection created with ``lexical=True`` the
sparse vector ``lexical`` (IDF modifier: BM25 in Qdrant, :mod:`rag.bm25.sparse`). Point ids are
content-addressed (see :func:`rag.index.versions.point_id`), so an index version can list exactly the
points it uses.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from rag.dense.matryoshka import truncate
from rag.dense.store import FULL, LEXICAL, SparseVector, check_sparse, full_vector, prefix_dims, vector_name

__all__ = ["FULL", "QdrantStore", "is_local", "vector_name"]


def is_local(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


class QdrantStore:
    """One collection. Calls are serialised in local mode (its in-process engine is not thread-safe);
    a server client is used concurrently. ``lexical``: the collection has (or is created with) the
    ``lexical`` sparse vector; an existing collection that disagrees is refused."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        sync_record: Path | None = None,
        per_process: bool | None = None,
        lexical: bool = False,
    ) -> None:
        """``sync_record``: where the ingest records which index version the collection holds
        (:mod:`rag.index.shard_sync`; None: compared in full at each ingest). ``per_process``: only this
        process reads the collection (default: in local mode), so it brings it to each version it serves."""
        self.client = client
        self.collection = collection
        self.sync_record = sync_record
        self.lexical = lexical
        self.local = is_local(client)
        self.per_process = self.local if per_process is None else per_process
        self._lock: AbstractContextManager[object] = threading.Lock() if self.local else nullcontext()
        self._low_dims: tuple[int, ...] = ()

    def ensure_collection(self, full_dim: int) -> None:
        self._low_dims = prefix_dims(full_dim)
        with self._lock:
            if self.client.collection_exists(self.collection):
                sparse = self.client.get_collection(self.collection).config.params.sparse_vectors or {}
                if (LEXICAL in sparse) != self.lexical:
                    raise ValueError(
                        f"collection {self.collection!r} {'has' if LEXICAL in sparse else 'has no'} the "
                        f"lexical sparse vector, this store was opened with lexical={self.lexical}; "
                        "re-ingest into a new collection (RAG_COLLECTION)"
                    )
                return
            vectors = {FULL: models.VectorParams(size=full_dim, distance=models.Distance.COSINE)}
            for d in self._low_dims:
                vectors[vector_name(d)] = models.VectorParams(size=d, distance=models.Distance.COSINE)
            lexical = {LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)}
            # one shard when lexical: a server computes IDF per shard, and BM25 needs the collection's
            self.client.create_collection(
                self.collection,
                vectors_config=vectors,
                sparse_vectors_config=lexical if self.lexical else None,
                shard_number=1 if self.lexical else None,
            )
            if not self.local:  # local mode has no payload indexes; a server needs one for tenant filters
                self.client.create_payload_index(
                    self.collection,
                    "tenant",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                )
                self.client.create_payload_index(  # document ACLs (rag.acl): keyword entries
                    self.collection, "acl", models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD)
                )

    def existing(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` are already stored (lets a resumed or repeated ingest skip embedding)."""
        found: set[str] = set()
        for start in range(0, len(ids), 1000):
            with self._lock:
                records = self.client.retrieve(
                    self.collection,
                    ids=list(ids[start : start + 1000]),
                    with_payload=False,
                    with_vectors=False,
                )
            found.update(str(r.id) for r in records)
        return found

    def stored_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), 1000):
            with self._lock:
                records = self.client.retrieve(
                    self.collection, list(ids[start : start + 1000]), with_payload=False, with_vectors=[FULL]
                )
            for r in records:
                vector = full_vector(r.vector)
                if vector is not None:
                    found[str(r.id)] = vector
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
        named: dict[str, np.ndarray] = {FULL: vectors}
        for d in self._low_dims:
            named[vector_name(d)] = truncate(vectors, d)
        points = []
        for i, pid in enumerate(ids):
            vector: dict[str, Any] = {name: arr[i].tolist() for name, arr in named.items()}
            if sparse is not None and sparse[i].indices:  # no terms: no vector, outside the IDF corpus
                vector[LEXICAL] = models.SparseVector(indices=sparse[i].indices, values=sparse[i].values)
            points.append(models.PointStruct(id=pid, vector=vector, payload=payloads[i]))
        with self._lock:
            self.client.upsert(self.collection, points=points, wait=True)

    def delete(self, ids: Iterable[str]) -> None:
        id_list = list(ids)
        for start in range(0, len(id_list), 1000):
            chunk: list[models.ExtendedPointId] = list(id_list[start : start + 1000])
            with self._lock:
                self.client.delete(
                    self.collection, points_selector=models.PointIdsList(points=chunk), wait=True
                )

    def optimize(self) -> None:
        """Nothing to do: writes wait for the server (``wait=True``), which indexes in the background, and
        local mode has no indexes."""

    def all_ids(self) -> set[str]:
        ids: set[str] = set()
        offset = None
        while True:
            with self._lock:
                records, offset = self.client.scroll(
                    self.collection, limit=1000, offset=offset, with_payload=False, with_vectors=False
                )
            ids.update(str(r.id) for r in records)
            if offset is None:
                return ids

    def count(self) -> int:
        with self._lock:
            return int(self.client.count(self.collection, exact=True).count)

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
        """Nearest points to a rotated, normalised query. With ``dims`` set: prefetch ``prefetch`` points
        by the ``dims``-prefix, then rescore those at full dimension and keep ``limit`` (the funnel); with
        ``rescore=False`` rank by the prefix alone."""
        if limit < 1:
            raise ValueError(f"limit must be greater than 0, got {limit}")
        with self._lock:
            response = self._query(query, limit, dims, prefetch, rescore, query_filter)
        return [(str(p.id), float(p.score)) for p in response.points]

    def _query(
        self,
        query: np.ndarray,
        limit: int,
        dims: int | None,
        prefetch: int,
        rescore: bool,
        query_filter: models.Filter | None,
    ) -> models.QueryResponse:
        full = query.astype(np.float32).tolist()
        if dims is not None and dims < query.shape[-1] and not rescore:
            return self.client.query_points(
                self.collection,
                query=truncate(query, dims).tolist(),
                using=vector_name(dims),
                limit=limit,
                with_payload=False,
                query_filter=query_filter,
            )
        if dims is None or dims >= query.shape[-1]:
            return self.client.query_points(
                self.collection,
                query=full,
                using=FULL,
                limit=limit,
                with_payload=False,
                query_filter=query_filter,
            )
        return self.client.query_points(
            self.collection,
            prefetch=models.Prefetch(
                query=truncate(query, dims).tolist(),
                using=vector_name(dims),
                limit=max(prefetch, limit),
                filter=query_filter,
            ),
            query=full,
            using=FULL,
            limit=limit,
            with_payload=False,
        )

    def search_sparse(
        self, query: SparseVector, *, limit: int, query_filter: models.Filter | None = None
    ) -> list[tuple[str, float]]:
        """As :meth:`rag.dense.store.VectorStore.search_sparse`."""
        if limit < 1:
            raise ValueError(f"limit must be greater than 0, got {limit}")
        if not self.lexical:
            raise ValueError(f"collection {self.collection!r} has no lexical sparse vector (lexical=False)")
        if not query.indices:
            return []
        with self._lock:
            response = self.client.query_points(
                self.collection,
                query=models.SparseVector(indices=query.indices, values=query.values),
                using=LEXICAL,
                limit=limit,
                with_payload=False,
                query_filter=query_filter,
            )
        return [(str(p.id), float(p.score)) for p in response.points if p.score > 0]

    def close(self) -> None:
        self.client.close()
