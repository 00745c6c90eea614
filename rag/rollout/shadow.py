"""Shadow traffic: how far a candidate's ranking is from the baseline's, on a sample of live queries.

The baseline answers the caller; the candidate runs on the side for the sampled requests and only its
ranking, latency and cost are kept. Two measures of agreement on the top ``k``:

- :func:`overlap_at_k`: the share of documents the two top-k lists have in common, ``|A ∩ B| /
  max(|A|, |B|)`` where A and B are the top-k lists (deduplicated). Dividing by the longer list rather than
  by ``k`` makes two identical 3-item lists agree fully (1.0) while a list that is a strict subset of the
  other agrees less. Both empty: 1.0 (they agree on nothing to return); one empty: 0.0.
- :func:`rank_correlation`: Kendall's tau-b over the union of the two top-k lists. A document missing
  from one list is placed at rank ``k + 1`` of it, tied with the other missing ones (tau-b corrects for
  those ties). Identical lists give 1.0, reversed ones -1.0. When one side has no untied pair (at most
  one document, or all of the union missing from one list) tau-b is undefined: 1.0 if the two lists are
  identical, 0.0 otherwise, never NaN. Quadratic in the union size (at most ``2k``), fine for k ≤ 100.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


def top_k(ids: Sequence[str], k: int) -> list[str]:
    """The first ``k`` distinct ids in order (a repeated id counts once, at its first rank)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return list(dict.fromkeys(ids))[:k]


def overlap_at_k(a_ids: Sequence[str], b_ids: Sequence[str], k: int = 10) -> float:
    """``|top-k(a) ∩ top-k(b)| / max(|top-k(a)|, |top-k(b)|)``; 1.0 for two empty lists."""
    a, b = top_k(a_ids, k), top_k(b_ids, k)
    longer = max(len(a), len(b))
    if longer == 0:
        return 1.0
    return len(set(a) & set(b)) / longer


def ranks_with_missing(top: list[str], universe: list[str], missing_rank: int) -> list[int]:
    """The 1-based rank of each id of ``universe`` in ``top``; ``missing_rank`` for those not in it."""
    position = {doc: i + 1 for i, doc in enumerate(top)}
    return [position.get(doc, missing_rank) for doc in universe]


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b of two paired rank lists; None when undefined (no untied pair on one side)."""
    concordant = discordant = ties_x = ties_y = pairs = 0
    n = len(x)
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            pairs += 1
            if dx == 0:
                ties_x += 1
            if dy == 0:
                ties_y += 1
            if dx * dy > 0:
                concordant += 1
            elif dx * dy < 0:
                discordant += 1
    denominator = math.sqrt((pairs - ties_x) * (pairs - ties_y))
    if denominator == 0:
        return None
    return (concordant - discordant) / denominator


def rank_correlation(a_ids: Sequence[str], b_ids: Sequence[str], k: int = 10) -> float:
    """Kendall's tau-b of the two top-k lists over their union, missing documents at rank k + 1."""
    a, b = top_k(a_ids, k), top_k(b_ids, k)
    universe = list(dict.fromkeys([*a, *b]))
    tau = kendall_tau_b(ranks_with_missing(a, universe, k + 1), ranks_with_missing(b, universe, k + 1))
    if tau is None:
        return 1.0 if a == b else 0.0
    return tau


def cost_delta(baseline: Mapping[str, float], candidate: Mapping[str, float]) -> dict[str, float]:
    """Candidate minus baseline per unit (texts embedded, pairs reranked, tokens, core-seconds...); a
    unit missing on one side counts 0 there."""
    return {
        unit: candidate.get(unit, 0.0) - baseline.get(unit, 0.0) for unit in sorted({*baseline, *candidate})
    }


@dataclass(frozen=True, slots=True)
class ShadowComparison:
    overlap: float  # overlap_at_k
    rank_corr: float  # rank_correlation (Kendall's tau-b, in [-1, 1])
    latency_delta_ms: float  # candidate - baseline; > 0: the candidate is slower
    cost_delta: dict[str, float]  # candidate - baseline per unit; > 0: the candidate costs more


def compare(
    baseline_ids: Sequence[str],
    candidate_ids: Sequence[str],
    baseline_ms: float,
    candidate_ms: float,
    baseline_cost: Mapping[str, float] | None = None,
    candidate_cost: Mapping[str, float] | None = None,
    k: int = 10,
) -> ShadowComparison:
    """Everything a shadow run is judged on, for one request."""
    return ShadowComparison(
        overlap=overlap_at_k(baseline_ids, candidate_ids, k),
        rank_corr=rank_correlation(baseline_ids, candidate_ids, k),
        latency_delta_ms=candidate_ms - baseline_ms,
        cost_delta=cost_delta(baseline_cost or {}, candidate_cost or {}),
    )


def unit_interval(text: str) -> float:
    """A stable point in ``[0, 1)`` from sha256 of ``text`` (the same on every replica and run)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") / 2**64


class ShadowSampler:
    """Picks the requests to shadow: a request is sampled when the hash of its id falls below ``rate``,
    so replaying the same request ids samples the same requests, on any replica."""

    def __init__(self, rate: float, *, salt: str = "shadow") -> None:
        if not (0.0 <= rate <= 1.0):
            raise ValueError(f"rate must be in [0, 1], got {rate}")
        self.rate = rate
        self.salt = salt

    def sampled(self, request_id: str) -> bool:
        if self.rate <= 0.0:
            return False
        return self.rate >= 1.0 or unit_interval(f"{self.salt}:{request_id}") < self.rate
