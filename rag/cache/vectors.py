"""The cached queries of one namespace as a matrix, for the nearest-neighbour test of the L2 cache.

Debian's Redis 7.0 has no vector search, so each process keeps the vectors of the cached queries it knows
of (its own and, through Redis, the other replicas'); the payloads live in Redis with a TTL. The matrix is
small (bounded by ``max_entries``) and a lookup is one matrix-vector product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class CachedQuery:
    entry_id: str
    text: str
    expires_at: float  # wall clock (shared between processes)


@dataclass(frozen=True, slots=True)
class Neighbour:
    query: CachedQuery
    similarity: float


class QueryVectors:
    def __init__(self, dim: int, max_entries: int) -> None:
        self.dim = dim
        self.max_entries = max_entries
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._queries: list[CachedQuery] = []

    def __len__(self) -> int:
        return len(self._queries)

    def add(self, query: CachedQuery, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"vector must have shape ({self.dim},), got {vector.shape}")
        norm = float(np.linalg.norm(vector))
        unit = (vector / norm if norm else vector).astype(np.float32)
        self._vectors = np.vstack([self._vectors, unit[None, :]])
        self._queries.append(query)
        if len(self._queries) > self.max_entries:  # oldest first
            drop = len(self._queries) - self.max_entries
            self._vectors = self._vectors[drop:]
            self._queries = self._queries[drop:]

    def remove(self, entry_id: str) -> None:
        keep = [i for i, q in enumerate(self._queries) if q.entry_id != entry_id]
        self._vectors = self._vectors[keep]
        self._queries = [self._queries[i] for i in keep]

    def prune(self, now: float) -> None:
        keep = [i for i, q in enumerate(self._queries) if q.expires_at > now]
        if len(keep) != len(self._queries):
            self._vectors = self._vectors[keep]
            self._queries = [self._queries[i] for i in keep]

    def nearest(self, vector: np.ndarray, *, threshold: float, limit: int = 5) -> list[Neighbour]:
        """Cached queries with cosine similarity >= ``threshold``, most similar first."""
        if not self._queries:
            return []
        norm = float(np.linalg.norm(vector))
        sims = self._vectors @ (vector / norm if norm else vector).astype(np.float32)
        order = np.argsort(-sims)[:limit]
        return [Neighbour(self._queries[i], float(sims[i])) for i in order if sims[i] >= threshold]
