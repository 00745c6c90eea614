"""The evidence behind each result: where the query's own BM25 and dense lists placed its document, its
fusion score, its rerank score, and the calibrated confidence read from them.

Read from what the run kept (:class:`~rag.retrieval.step_runner.SearchOutcome`: the lists it fused and
the fusion's ranking), for the served results only: one pass over each list with a set lookup, a few
microseconds for two lists of 100 — nothing is recomputed and no retriever is asked again. Multi-query
lists (sub-queries, PRF) are fused but not shown: the evidence names the query's own two legs.
"""

from __future__ import annotations

from collections.abc import Sequence

from rag.index.calibration import ScoreCalibration
from rag.retrieval.step_runner import SearchOutcome
from rag.types import Evidence, Hit, LegEvidence, ListKey, Retriever

BM25, DENSE = ListKey(Retriever.BM25), ListKey(Retriever.DENSE)


def legs_ran(outcome: SearchOutcome) -> str:
    """Which of the query's own legs answered (``bm25``, ``dense``, ``bm25+dense``; "" for none): a leg
    that degraded away is not among them."""
    return "+".join(k.retriever.value for k in (BM25, DENSE) if k in outcome.lists)


def _placed(hits: list[Hit] | None, wanted: set[str]) -> dict[str, LegEvidence]:
    if hits is None:
        return {}
    return {
        h.doc_id: LegEvidence(rank, h.score) for rank, h in enumerate(hits, start=1) if h.doc_id in wanted
    }


def explain(
    outcome: SearchOutcome, hits: Sequence[Hit], calibration: ScoreCalibration | None = None
) -> list[Evidence]:
    """The evidence of each of ``hits`` (the served head of ``outcome.hits``), in their order."""
    wanted = {h.doc_id for h in hits}
    bm25 = _placed(outcome.lists.get(BM25), wanted)
    dense = _placed(outcome.lists.get(DENSE), wanted)
    fused = (
        {h.doc_id: h.score for h in outcome.fused if h.doc_id in wanted} if outcome.fused is not None else {}
    )
    reranked = {h.doc_id: h.score for h in outcome.hits[: outcome.rerank_pairs]}
    legs = legs_ran(outcome)
    out = []
    for h in hits:
        b, d = bm25.get(h.doc_id), dense.get(h.doc_id)
        confidence = calibration.confidence_of(b, d, legs) if calibration is not None else None
        out.append(Evidence(b, d, fused.get(h.doc_id), reranked.get(h.doc_id), confidence))
    return out
