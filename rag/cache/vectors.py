"""The cached queries of one namespace as a matrix, for the nearest-neighbour test of the L2 cache.

Debian's Redis 7.0 has no vector search, so each process keeps the vectors of the cached queries it knows
of (its own and, through Redis, the other replicas'); the payloads live in Redis with a TTL. A lookup is
one matrix-vector product over the rows in use.

Invariants: at most ``max_entries`` queries are held (``add`` refuses past it: the caller — the
:class:`~rag.cache.entries.L2Entries` that owns every space — decides what to evict, so that an answer
never outlives its vector); rows are reused after ``remove`` (no copy of the matrix per add or remove);
the matrix grows by doubling, so it holds at most twice the rows in use (and ``max_entries`` rows at most).
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
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.dim = dim
        self.max_entries = max_entries
        self._vectors = np.zeros((0, dim), dtype=np.float32)
        self._queries: list[CachedQuery | None] = []  # by row; None = free
        self._rows: dict[str, int] = {}  # entry id -> row, in insertion order (oldest first)
        self._free: list[int] = []

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, entry_id: object) -> bool:
        return entry_id in self._rows

    @property
    def full(self) -> bool:
        return len(self._rows) >= self.max_entries

    @property
    def nbytes(self) -> int:
        """Bytes of the matrix (rows in use and spare)."""
        return int(self._vectors.nbytes)

    def oldest(self) -> str | None:
        return next(iter(self._rows), None)

    def add(self, query: CachedQuery, vector: np.ndarray) -> None:
        if vector.shape != (self.dim,):
            raise ValueError(f"vector must have shape ({self.dim},), got {vector.shape}")
        if query.entry_id in self._rows:
            raise ValueError(f"entry {query.entry_id!r} is already held")
        if self.full:
            raise ValueError(f"a namespace holds at most {self.max_entries} queries: remove one first")
        norm = float(np.linalg.norm(vector))
        unit = (vector / norm if norm else vector).astype(np.float32)
        if not self._free:
            self._grow()
        row = self._free.pop()
        self._vectors[row] = unit
        self._queries[row] = query
        self._rows[query.entry_id] = row

    def _grow(self) -> None:
        used = len(self._queries)
        size = min(max(4, used * 2), self.max_entries)
        grown = np.zeros((size, self.dim), dtype=np.float32)
        grown[:used] = self._vectors
        self._vectors = grown
        self._queries.extend([None] * (size - used))
        self._free.extend(range(size - 1, used - 1, -1))  # lowest row first

    def remove(self, entry_id: str) -> bool:
        row = self._rows.pop(entry_id, None)
        if row is None:
            return False
        self._queries[row] = None
        self._vectors[row] = 0.0
        self._free.append(row)
        return True

    def nearest(
        self, vector: np.ndarray, *, threshold: float, limit: int = 5, now: float | None = None
    ) -> list[Neighbour]:
        """Live cached queries with cosine similarity >= ``threshold``, most similar first (at most
        ``limit``); with ``now``, those expired by then are left out."""
        if not self._rows:
            return []
        norm = float(np.linalg.norm(vector))
        sims = self._vectors @ (vector / norm if norm else vector).astype(np.float32)
        out: list[Neighbour] = []
        for i in np.argsort(-sims):
            if sims[i] < threshold or len(out) == limit:
                break
            query = self._queries[i]
            if query is not None and (now is None or query.expires_at > now):
                out.append(Neighbour(query, float(sims[i])))
        return out
