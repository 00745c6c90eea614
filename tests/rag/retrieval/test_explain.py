"""Per-result evidence through the real pipeline: each leg's rank and score are what that leg alone
returns, the fused score is the fusion's, the rerank score the reranker's; the default results unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from rag.config import Settings
from rag.fusion import weighted_rrf
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime
from rag.types import Hit, LegEvidence
from tests.conftest import ANIMALS, make_ingestor
from tests.rag.retrieval.test_multi_query_and_gate import CountingReranker

QUERIES = ["which animals hunt mice", "insects making honey", "mammals of the ocean", "birds at night"]


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    store.close()
    return Runtime.open(settings, load_reranker=False)


def _alone(runtime: Runtime, pipeline: PipelineName, query: str) -> dict[str, LegEvidence]:
    hits = _hits(runtime, pipeline, query)
    return {h.doc_id: LegEvidence(rank, h.score) for rank, h in enumerate(hits, start=1)}


def _hits(runtime: Runtime, pipeline: PipelineName, query: str) -> list[Hit]:
    plan = plan_for(pipeline, runtime.settings, top_k=6, reranker_available=False)
    return runtime.pipeline.search(query, plan, SearchFilter(None)).hits


@pytest.mark.parametrize("query", QUERIES)
def test_hybrid_evidence_is_what_each_leg_alone_returns(runtime: Runtime, query: str) -> None:
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=6, reranker_available=False)
    outcome = runtime.pipeline.search(query, plan, SearchFilter(None))
    results = runtime.pipeline.results(outcome.hits, 6, outcome=outcome)
    bm25, dense = _alone(runtime, PipelineName.BM25, query), _alone(runtime, PipelineName.DENSE, query)
    assert results, "the query finds something"
    fused = {
        h.doc_id: h.score
        for h in weighted_rrf(
            {
                "bm25": _hits(runtime, PipelineName.BM25, query),
                "dense": _hits(runtime, PipelineName.DENSE, query),
            },
            {"bm25": plan.weights["bm25"], "dense": plan.weights["dense"]},
            k=plan.rrf_k,
        )
    }
    for r in results:
        e = r.evidence
        assert e is not None
        assert e.bm25 == bm25.get(r.doc_id) and e.dense == dense.get(r.doc_id)
        assert e.fused == pytest.approx(fused[r.doc_id]) and e.fused == r.score
        assert e.rerank is None and e.confidence is None  # not reranked; an uncalibrated collection
        assert e.bm25 is not None or e.dense is not None
    # the default results: ids, order and scores as without evidence
    plain = runtime.pipeline.results(outcome.hits, 6)
    assert [(r.doc_id, r.rank, r.score, r.chunk_id) for r in plain] == [
        (r.doc_id, r.rank, r.score, r.chunk_id) for r in results
    ]
    assert all(r.evidence is None for r in plain)


def test_a_single_leg_shows_only_that_leg_and_no_fusion(runtime: Runtime) -> None:
    plan = plan_for(PipelineName.BM25, runtime.settings, top_k=6, reranker_available=False)
    outcome = runtime.pipeline.search("hunt mice", plan, SearchFilter(None))
    results = runtime.pipeline.results(outcome.hits, 6, outcome=outcome)
    assert results
    for r in results:
        assert r.evidence is not None
        assert r.evidence.bm25 == LegEvidence(r.rank, r.score)
        assert r.evidence.dense is None and r.evidence.fused is None and r.evidence.rerank is None


def test_reranked_results_carry_the_rerank_and_the_first_stage_evidence(runtime: Runtime) -> None:
    reranker = CountingReranker()  # scores a pair by the passage's length
    pipeline = SearchPipeline(runtime.snapshot, runtime.embedder, runtime.pipeline.dense, reranker)
    plan = dataclasses.replace(
        plan_for(PipelineName.HYBRID_RERANK, runtime.settings, top_k=6, reranker_available=True),
        rerank_depth=3,
        rerank_gate=None,
    )
    outcome = pipeline.search("which animals hunt mice", plan, SearchFilter(None))
    results = pipeline.results(outcome.hits, 6, outcome=outcome)
    assert outcome.rerank_pairs == 3
    fused = {h.doc_id: h.score for h in outcome.fused or []}
    for r in results:
        assert r.evidence is not None and r.evidence.fused == fused[r.doc_id]
    head, tail = results[:3], results[3:]
    for r in head:  # the reranked head: its score is the reranker's, shown as such
        passage = runtime.snapshot.chunk(r.chunk_id).passage
        assert r.evidence is not None and r.evidence.rerank == r.score == float(len(passage))
    assert all(r.evidence is not None and r.evidence.rerank is None for r in tail)
    assert np.all(np.diff([r.score for r in head]) <= 0)
