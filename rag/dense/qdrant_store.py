"""Vectors in Qdrant through qdrant-client: the same code for local mode on disk and a server/cluster URL.

Each point carries named vectors: ``full`` (the rotated embedding) and ``d64``/``d128``/``d256`` (its
normalised prefixes) for the Matryoshka funnel. Point ids are content-addressed (see
:func:`rag.index.versions.point_id`), so an index version can list exactly the points it uses.
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
from rag.dense.store import FULL, prefix_dims, vector_name

__all__ = ["FULL", "QdrantStore", "is_local", "vector_name"]


def is_local(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


class QdrantStore:
    """One collection. Calls are serialised in local mode (its in-process engine is not thread-safe);
    a server client is used concurrently."""

    def __init__(
        self,
        client: QdrantClient,
        collection: str,
        *,
        sync_record: Path | None = None,
        per_process: bool | None = None,
    ) -> None:
        """``sync_record``: where the ingest records which index version the collection holds
        (:mod:`rag.index.shard_sync`; None: compared in full at each ingest). ``per_process``: only this
        process reads the collection (default: in local mode), so it brings it to each version it serves."""
        self.client = client
        self.collection = collection
        self.sync_record = sync_record
        self.local = is_local(client)
        self.per_process = self.local if per_process is None else per_process
        self._lock: AbstractContextManager[object] = threading.Lock() if self.local else nullcontext()
        self._low_dims: tuple[int, ...] = ()

    def ensure_collection(self, full_dim: int) -> None:
        self._low_dims = prefix_dims(full_dim)
        with self._lock:
            if self.client.collection_exists(self.collection):
                return
            vectors = {FULL: models.VectorParams(size=full_dim, distance=models.Distance.COSINE)}
            for d in self._low_dims:
                vectors[vector_name(d)] = models.VectorParams(size=d, distance=models.Distance.COSINE)
            self.client.create_collection(self.collection, vectors_config=vectors)
            if not self.local:  # local mode has no payload indexes; a server needs one for tenant filters
                self.client.create_payload_index(
                    self.collection,
                    "tenant",
                    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
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
                vector = r.vector.get(FULL) if isinstance(r.vector, dict) else None
                if vector is not None:
                    found[str(r.id)] = np.asarray(vector, dtype=np.float32)
        return found

    def upsert(self, ids: Sequence[str], vectors: np.ndarray, payloads: Sequence[dict[str, Any]]) -> None:
        if not (len(ids) == len(vectors) == len(payloads)):
            raise ValueError(f"ids ({len(ids)}), vectors ({len(vectors)}), payloads ({len(payloads)}) differ")
        named: dict[str, np.ndarray] = {FULL: vectors}
        for d in self._low_dims:
            named[vector_name(d)] = truncate(vectors, d)
        points = [
            models.PointStruct(
                id=pid, vector={name: arr[i].tolist() for name, arr in named.items()}, payload=payloads[i]
            )
            for i, pid in enumerate(ids)
        ]
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

    def close(self) -> None:
        self.client.close()
