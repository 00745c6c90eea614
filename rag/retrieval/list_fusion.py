"""The ranked lists a run fuses, and the weight each gets: the plan's retriever weights, shared out over
the extra lists of multi-query (a PRF-expanded BM25 list, one list per sub-query and retriever)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

from rag.fusion import fuse
from rag.retrieval.plan import QueryPlan
from rag.types import Hit, ListKey

PRF_WEIGHT = 0.5  # of the BM25 weight: the expanded query re-ranks what the original found


def list_weights(keys: Sequence[ListKey], weights: Mapping[str, float]) -> dict[ListKey, float]:
    """Fusion weight of each ranked list: ``bm25`` / ``dense`` as planned; a PRF list half its
    retriever's; each sub-query's list an equal share of its retriever's (``bm25.q1``, ``dense.q2``…)."""
    parts = Counter(key.retriever for key in keys if key.sub_query)
    out = {}
    for key in keys:
        w = weights.get(key.retriever, 1.0)
        out[key] = w * PRF_WEIGHT if key.prf else w / parts[key.retriever] if key.sub_query else w
    return out


def fuse_lists(lists: Mapping[ListKey, list[Hit]], plan: QueryPlan) -> list[Hit]:
    """One ranking from the run's lists (in the order they were started: ties keep it), fused as the
    plan says; a single list stands as it is."""
    if len(lists) == 1:
        return next(iter(lists.values()))
    return fuse(plan.fusion, lists, list_weights(list(lists), plan.weights), rrf_k=plan.rrf_k)
