"""Multi-query plans (sub-queries + PRF, fused) and the adaptive rerank gate, through the real pipeline."""

from __future__ import annotations

import numpy as np
import pytest

from rag.config import Settings
from rag.retrieval.filters import SearchFilter
from rag.retrieval.list_fusion import list_weights
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import PipelineName, plan_for
from rag.retrieval.step_runner import StepEvent
from rag.runtime import Runtime
from rag.types import ListKey, Retriever, Step, StepKey
from tests.conftest import ANIMALS, make_ingestor


class CountingReranker:
    """Scores pairs by passage length (deterministic) and counts the pairs it was given."""

    name = "counting"
    first_stage_weight = 0.0

    def __init__(self) -> None:
        self.pairs = 0

    def warm_up(self) -> None:
        pass

    def score_pairs(self, pairs):  # type: ignore[no-untyped-def]
        self.pairs += len(pairs)
        return np.asarray([float(len(passage)) for _, passage in pairs])


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    store.close()
    return Runtime.open(settings, load_reranker=False)


def test_list_weights_share_each_retrievers_weight() -> None:
    bm25, dense = Retriever.BM25, Retriever.DENSE
    keys = [
        ListKey(bm25),
        ListKey(dense),
        ListKey(bm25, prf=True),
        ListKey(bm25, 1),
        ListKey(bm25, 2),
        ListKey(dense, 1),
        ListKey(dense, 2),
    ]
    w = list_weights(keys, {"bm25": 1.0, "dense": 2.0})
    assert {str(key): weight for key, weight in w.items()} == {
        "bm25": 1.0,
        "dense": 2.0,
        "bm25.prf": 0.5,
        "bm25.q1": 0.5,
        "bm25.q2": 0.5,
        "dense.q1": 1.0,
        "dense.q2": 1.0,
    }


def test_multi_query_runs_each_part_and_finds_both_topics(runtime: Runtime) -> None:
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=6, reranker_available=False)
    query = "cats hunt mice at night whereas whales sing underwater songs"
    single = runtime.pipeline.search(query, plan, SearchFilter(None))
    multi = runtime.pipeline.search(query, plan.with_(multi_query=True), SearchFilter(None))
    steps = set(multi.timings_ms)
    assert {"retrieve.bm25.prf", "retrieve.bm25.q1", "retrieve.bm25.q2"} <= steps
    assert {"retrieve.dense.q1", "retrieve.dense.q2", "embed.q1", "embed.q2"} <= steps
    assert multi.embedded_texts == 3 and single.embedded_texts == 1
    top = [h.doc_id for h in multi.hits[:3]]
    assert "whale" in top and ("cat" in top or "owl" in top)


def test_a_query_that_does_not_split_adds_only_prf(runtime: Runtime) -> None:
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=6, reranker_available=False)
    outcome = runtime.pipeline.search("owls hunt mice", plan.with_(multi_query=True), SearchFilter(None))
    assert "retrieve.bm25.prf" in outcome.timings_ms
    assert not any(".q" in step for step in outcome.timings_ms)


def test_rerank_gate_skips_where_retrievers_disagree(runtime: Runtime, settings: Settings) -> None:
    reranker = CountingReranker()
    pipeline = SearchPipeline(runtime.snapshot, runtime.embedder, runtime.pipeline.dense, reranker)
    plan = plan_for(PipelineName.HYBRID_RERANK, settings, top_k=6, reranker_available=True)
    events: list[StepEvent] = []

    async def run(gate: float) -> None:
        await pipeline.run("mice", plan.with_(rerank_gate=gate), SearchFilter(None), events.append)

    import asyncio

    asyncio.run(run(1.0))  # six documents: BM25 finds two with "mice", so the top 10s cannot agree fully
    gate_event = next(e for e in events if e.step == StepKey(Step.RERANK_GATE))
    assert gate_event.detail["depth"] == 0 and reranker.pairs == 0
    events.clear()
    asyncio.run(run(0.0))
    gate_event = next(e for e in events if e.step == StepKey(Step.RERANK_GATE))
    assert gate_event.detail["depth"] == plan.rerank_depth and reranker.pairs > 0
