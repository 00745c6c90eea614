"""How deep a run reranks, decided after the first stage: the plan's depth, gated on how much its
retrievers agree, then cut to the pairs that fit in the time left. Pure functions; the run
(:mod:`rag.retrieval.pipeline_run`) applies them. The plan's depth itself (profile and budget caps) is
the router's (:func:`rag.routing.router.fit`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

MIN_USEFUL_DEPTH = 5  # fewer pairs than this reorders too little to be worth a model call


def agreement(a: Sequence[str], b: Sequence[str], k: int = 10) -> float:
    """Share of the top ``k`` that two rankings have in common (0 when either is empty)."""
    if not a or not b:
        return 0.0
    return len(set(a[:k]) & set(b[:k])) / k


def gated_depth(agreement_share: float | None, gate: float | None, max_depth: int) -> int:
    """The rerank depth for a query: ``max_depth`` when there is no gate, or when the retrievers agree at
    least ``gate`` (their shared head is where the cross-encoder reorders well); else 0.
    ``agreement_share`` None (only one retriever ran) passes the gate: nothing to compare."""
    if gate is None or agreement_share is None or agreement_share >= gate:
        return max_depth
    return 0


def affordable_pairs(remaining_s: float, reserve_s: float, per_pair_s: float) -> int | None:
    """How many pairs fit in the time left (None when the per-pair cost is not known yet)."""
    if per_pair_s <= 0:
        return None
    return max(math.floor((remaining_s - reserve_s) / per_pair_s), 0)


def fitted_depth(depth: int, remaining_s: float, reserve_s: float, per_pair_s: float) -> int:
    """``depth`` cut to the pairs that fit in the time left, when fewer than ``depth`` but at least
    :data:`MIN_USEFUL_DEPTH` do; otherwise ``depth`` unchanged (with fewer than that, the guarded rerank
    step does not start: it would not fit)."""
    fit = affordable_pairs(remaining_s, reserve_s, per_pair_s)
    if fit is None or fit >= depth or fit < MIN_USEFUL_DEPTH:
        return depth
    return fit
