"""Feedback → reward, as small pure functions.

A quality reward lies in [0, 1] and comes from the strongest signal the feedback carries:

1. ``relevance`` — graded judgements ``{doc_id: grade}`` → nDCG@10 of the served ranking (linear gains,
   log2 discount, the ideal ranking built from all the judged documents, as trec_eval's ``ndcg_cut``);
2. ``clicked`` — doc ids the user clicked → reciprocal rank of the best-ranked clicked document among
   the served ones (0 when none of them was served);
3. ``rating`` — 1..5 stars → (rating − 1) / 4.

:func:`net_reward` then charges for what the plan cost, which is what the bandit learns from.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence


def dcg(gains: Sequence[float]) -> float:
    """Σ gain_i / log2(i + 2) over ranks i = 0, 1, …"""
    return sum(g / math.log2(i + 2) for i, g in enumerate(gains))


def ndcg_at_k(served: Sequence[str], grades: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k of the ``served`` ranking against graded judgements (unjudged documents count 0)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    for doc_id, grade in grades.items():
        if isinstance(grade, bool) or not (math.isfinite(grade) and grade >= 0):
            raise ValueError(f"relevance grades must be finite numbers >= 0, got {grade!r} for {doc_id!r}")
    ideal = dcg(sorted(grades.values(), reverse=True)[:k])
    if ideal == 0:
        return 0.0
    seen: set[str] = set()
    gains = []
    for doc_id in served[:k]:  # a document served twice earns its grade once
        gains.append(0.0 if doc_id in seen else float(grades.get(doc_id, 0.0)))
        seen.add(doc_id)
    return dcg(gains) / ideal


def reciprocal_rank(served: Sequence[str], clicked: Collection[str]) -> float:
    """1 / rank (1-based) of the first served document that was clicked; 0 if none was."""
    wanted = set(clicked)
    for rank, doc_id in enumerate(served, start=1):
        if doc_id in wanted:
            return 1.0 / rank
    return 0.0


def rating_reward(rating: float) -> float:
    """A 1..5 rating mapped linearly onto [0, 1]."""
    if isinstance(rating, bool) or not (math.isfinite(rating) and 1 <= rating <= 5):
        raise ValueError(f"rating must be a number in 1..5, got {rating!r}")
    return (float(rating) - 1.0) / 4.0


def feedback_reward(
    served: Sequence[str],
    *,
    relevance: Mapping[str, float] | None = None,
    clicked: Collection[str] | None = None,
    rating: float | None = None,
) -> float:
    """The quality reward in [0, 1] from the strongest signal given: relevance > clicked > rating.

    ``clicked=[]`` is a signal (the user saw the results and clicked nothing: 0); an empty
    ``relevance`` mapping is refused, since it judges nothing."""
    if relevance is not None:
        if not relevance:
            raise ValueError("relevance must grade at least one doc id, got an empty mapping")
        return ndcg_at_k(served, relevance, k=10)
    if clicked is not None:
        return reciprocal_rank(served, clicked)
    if rating is not None:
        return rating_reward(rating)
    raise ValueError(
        "feedback must carry one of relevance ({doc_id: grade}), clicked ([doc_id]) or rating (1..5)"
    )


def net_reward(quality: float, cost: float, cost_weight: float) -> float:
    """quality − cost_weight·cost: what a plan earned, net of what it cost.

    ``cost`` is in whatever unit the caller measures (CPU-seconds, reranked pairs, money) and
    ``cost_weight`` says how much quality one unit is worth giving up: with cost in CPU-seconds and
    ``cost_weight = 0.05``, a plan must gain 0.05 nDCG per extra CPU-second to pay for itself. The result
    can be negative; it is not clipped (the bandit's regression needs no bounded reward)."""
    for name, value in (("quality", quality), ("cost", cost), ("cost_weight", cost_weight)):
        if isinstance(value, bool) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if cost < 0 or cost_weight < 0:
        raise ValueError(f"cost and cost_weight must be >= 0, got cost={cost}, cost_weight={cost_weight}")
    return float(quality) - float(cost_weight) * float(cost)
