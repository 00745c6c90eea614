"""Rank fusion as pure functions over ranked lists of hits (best first).

* :func:`weighted_rrf` — weighted Reciprocal Rank Fusion, ``sum_r w_r / (k + rank_r(d))`` with 1-based ranks.
* :func:`minmax_fusion` — score-normalised fusion: each list's scores min-max scaled to [0, 1], then a
  weighted sum; a document missing from a list contributes 0 for it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from enum import StrEnum
from typing import TypeVar

from rag.types import Hit

K = TypeVar("K", bound=Hashable)  # what names a ranked list (a retriever name, a ListKey)


class FusionMethod(StrEnum):
    RRF = "rrf"
    MINMAX = "minmax"

    @classmethod
    def from_str(cls, value: str) -> FusionMethod:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"fusion must be one of {[m.value for m in cls]}, got {value!r}") from None


def _check_weights(lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float]) -> None:
    missing = set(lists) - set(weights)
    if missing:
        raise ValueError(
            f"no fusion weight for retriever(s) {sorted(map(str, missing))}; weights given: {dict(weights)}"
        )
    negative = {name: w for name, w in weights.items() if w < 0}
    if negative:
        raise ValueError(f"fusion weights must be >= 0, got {negative}")


def _ranked(scores: dict[str, float], best_chunk: dict[str, str], first_seen: dict[str, int]) -> list[Hit]:
    order = sorted(scores, key=lambda d: (-scores[d], first_seen[d]))
    return [Hit(d, scores[d], best_chunk[d]) for d in order]


def weighted_rrf(lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float], *, k: int = 60) -> list[Hit]:
    """Fuse ranked lists with weighted RRF. Ties keep the order in which documents were first seen
    (list order, then rank), so the result is deterministic."""
    if k < 1:
        raise ValueError(f"rrf k must be at least 1, got {k}")
    _check_weights(lists, weights)
    scores: dict[str, float] = {}
    best_chunk: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for name, hits in lists.items():
        weight = weights[name]
        for rank, hit in enumerate(hits, start=1):
            scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + weight / (k + rank)
            best_chunk.setdefault(hit.doc_id, hit.chunk_id)
            first_seen.setdefault(hit.doc_id, len(first_seen))
    return _ranked(scores, best_chunk, first_seen)


def minmax_normalise(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1]; a constant list maps to all ones (every item equally the best)."""
    if not values:
        return []
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(v - lo) / (hi - lo) for v in values]


def minmax_fusion(lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float]) -> list[Hit]:
    """Fuse ranked lists by the weighted sum of min-max normalised scores."""
    _check_weights(lists, weights)
    scores: dict[str, float] = {}
    best_chunk: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for name, hits in lists.items():
        weight = weights[name]
        for hit, norm in zip(hits, minmax_normalise([h.score for h in hits]), strict=True):
            scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + weight * norm
            best_chunk.setdefault(hit.doc_id, hit.chunk_id)
            first_seen.setdefault(hit.doc_id, len(first_seen))
    return _ranked(scores, best_chunk, first_seen)


def fuse(
    method: FusionMethod, lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float], *, rrf_k: int = 60
) -> list[Hit]:
    if method is FusionMethod.RRF:
        return weighted_rrf(lists, weights, k=rrf_k)
    return minmax_fusion(lists, weights)
