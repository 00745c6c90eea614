"""Rank fusion as pure functions over ranked lists of hits (best first).

* :func:`weighted_rrf` — weighted Reciprocal Rank Fusion, ``sum_r w_r / (k + rank_r(d))`` with 1-based ranks.
* :func:`minmax_fusion` — score-normalised fusion: each list's scores min-max scaled to [0, 1], then a
  weighted sum; a document missing from a list contributes 0 for it.
* :func:`dbsf_fusion` — distribution-based score fusion (Qdrant's DBSF): each list's scores z-scaled, i.e.
  mapped from ``[mean - 3 sd, mean + 3 sd]`` to [0, 1] (clipped), then a weighted sum; missing contributes 0.

:class:`FusionChoice` is one fusion setting as a value (method, weights, RRF k): what ``rag tune`` chooses
for a collection and the plan carries, with the reason it was chosen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from rag.types import Hit

K = TypeVar("K", bound=Hashable)  # what names a ranked list (a retriever name, a ListKey)


class FusionMethod(StrEnum):
    RRF = "rrf"
    MINMAX = "minmax"
    DBSF = "dbsf"

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


def dbsf_normalise(values: Sequence[float]) -> list[float]:
    """Scale to [0, 1] by the list's own distribution: ``mean - 3 sd`` → 0 and ``mean + 3 sd`` → 1, clipped
    (Qdrant's distribution-based score fusion). A constant list maps to all ones, as in min-max."""
    if not values:
        return []
    mean = math.fsum(values) / len(values)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / len(values))
    if sd == 0.0:
        return [1.0] * len(values)
    lo = mean - 3.0 * sd
    return [min(1.0, max(0.0, (v - lo) / (6.0 * sd))) for v in values]


def _normalised_fusion(
    lists: Mapping[K, Sequence[Hit]],
    weights: Mapping[K, float],
    normalise: Callable[[Sequence[float]], list[float]],
) -> list[Hit]:
    _check_weights(lists, weights)
    scores: dict[str, float] = {}
    best_chunk: dict[str, str] = {}
    first_seen: dict[str, int] = {}
    for name, hits in lists.items():
        weight = weights[name]
        for hit, norm in zip(hits, normalise([h.score for h in hits]), strict=True):
            scores[hit.doc_id] = scores.get(hit.doc_id, 0.0) + weight * norm
            best_chunk.setdefault(hit.doc_id, hit.chunk_id)
            first_seen.setdefault(hit.doc_id, len(first_seen))
    return _ranked(scores, best_chunk, first_seen)


def minmax_fusion(lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float]) -> list[Hit]:
    """Fuse ranked lists by the weighted sum of min-max normalised scores."""
    return _normalised_fusion(lists, weights, minmax_normalise)


def dbsf_fusion(lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float]) -> list[Hit]:
    """Fuse ranked lists by the weighted sum of distribution-normalised scores (:func:`dbsf_normalise`)."""
    return _normalised_fusion(lists, weights, dbsf_normalise)


def fuse(
    method: FusionMethod, lists: Mapping[K, Sequence[Hit]], weights: Mapping[K, float], *, rrf_k: int = 60
) -> list[Hit]:
    if method is FusionMethod.RRF:
        return weighted_rrf(lists, weights, k=rrf_k)
    if method is FusionMethod.DBSF:
        return dbsf_fusion(lists, weights)
    return minmax_fusion(lists, weights)


@dataclass(frozen=True, slots=True)
class FusionChoice:
    """How a hybrid plan fuses its BM25 and dense lists. A weight of 0 drops that leg: the "fusion" is then
    the other retriever alone. ``reason`` says where the choice came from (the configured default, or
    ``rag tune`` and on what evidence)."""

    method: FusionMethod = FusionMethod.RRF
    weights: Mapping[str, float] = field(default_factory=lambda: {"bm25": 1.0, "dense": 1.0})
    rrf_k: int = 60
    reason: str = "configured default"

    def __post_init__(self) -> None:
        if self.rrf_k < 1:
            raise ValueError(f"rrf k must be at least 1, got {self.rrf_k}")
        if set(self.weights) != {"bm25", "dense"}:
            raise ValueError(f"fusion weights must name bm25 and dense, got {sorted(self.weights)}")
        if any(w < 0 for w in self.weights.values()) or not any(w > 0 for w in self.weights.values()):
            raise ValueError(f"fusion weights must be >= 0 and not all 0, got {dict(self.weights)}")

    @property
    def legs(self) -> tuple[str, ...]:
        """The retrievers a hybrid plan runs under this choice (a leg weighted 0 is not run)."""
        return tuple(r for r in ("bm25", "dense") if self.weights[r] > 0)

    @property
    def label(self) -> str:
        """A short name, e.g. ``minmax dense=0.60`` or ``rrf k=60 1:1`` or ``dense alone``."""
        if len(self.legs) == 1:
            return f"{self.legs[0]} alone"
        b, d = self.weights["bm25"], self.weights["dense"]
        if self.method is FusionMethod.RRF:
            return f"rrf k={self.rrf_k} bm25:dense={b:g}:{d:g}"
        return f"{self.method.value} dense={d / (b + d):.2f}"

    def to_json(self) -> dict[str, Any]:
        return {
            "method": self.method.value,
            "weights": dict(self.weights),
            "rrf_k": self.rrf_k,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FusionChoice:
        return cls(
            FusionMethod.from_str(str(data["method"])),
            {str(k): float(v) for k, v in dict(data["weights"]).items()},
            int(data.get("rrf_k", 60)),
            str(data.get("reason", "")),
        )
