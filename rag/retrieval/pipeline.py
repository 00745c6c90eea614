"""The search pipeline: the components a query is answered with (the index snapshot, BM25, the dense
retriever, the embedder and reranker, and where their work runs), and the entry points that start a run.

Where things are: the order of the steps is :class:`~rag.retrieval.pipeline_run.PipelineRun`; how each
step runs (deadline, breaker, timeout, timing, degradation) is
:class:`~rag.retrieval.step_runner.StepRunner`; what a guarded run gives up, rung by rung, is
:mod:`rag.retrieval.degradation_ladder`; how deep it reranks is :mod:`rag.retrieval.rerank_depth`; the
threads its work runs in are a :class:`~rag.retrieval.compute.Compute`.
"""

from __future__ import annotations

import asyncio
import threading

from rag.dense.embedder import Embedder
from rag.index.snapshot import IndexSnapshot
from rag.rerank.cross_encoder import Reranker
from rag.retrieval.compute import Compute, InlineCompute
from rag.retrieval.explain import explain
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline_run import PipelineRun
from rag.retrieval.plan import QueryPlan
from rag.retrieval.retrievers import BM25Retriever, DenseRetriever
from rag.retrieval.shaping import GroupBy, chunk_counts
from rag.retrieval.step_runner import Guards, SearchOutcome, StepListener
from rag.types import Degradation, Hit, Result

_thread_loops = threading.local()


class SearchPipeline:
    def __init__(
        self,
        snapshot: IndexSnapshot,
        embedder: Embedder | None,
        dense: DenseRetriever | None,
        reranker: Reranker | None = None,
        compute: Compute | None = None,
        *,
        rerank_refusal: Degradation | None = None,
    ) -> None:
        """``rerank_refusal``: why a configured reranker does not rerank here (no ``reranker`` then); a
        planned rerank records it in ``degraded`` instead of ``rerank/not_configured``."""
        self.snapshot = snapshot
        self.embedder = embedder
        self.bm25 = BM25Retriever(snapshot)
        self.dense = dense
        self.reranker = reranker
        self.rerank_refusal = rerank_refusal
        self.compute = compute or InlineCompute(embedder, reranker)

    def search(self, query: str, plan: QueryPlan, flt: SearchFilter | None = None) -> SearchOutcome:
        """Run the pipeline to the end in this thread (no event loop needed by the caller). The thread's
        event loop is kept between calls: creating one per query would cost more than a BM25 search."""
        runner = getattr(_thread_loops, "runner", None)
        if runner is None:
            runner = _thread_loops.runner = asyncio.Runner()
        return runner.run(self.run(query, plan, flt))

    async def run(
        self,
        query: str,
        plan: QueryPlan,
        flt: SearchFilter | None = None,
        on_step: StepListener | None = None,
        guards: Guards | None = None,
    ) -> SearchOutcome:
        """The steps, in order: retrieval (BM25 beside embed → dense search), fusion, reranking.

        With ``guards``, a step that fails, times out, finds its breaker open or does not fit in the
        deadline is skipped and recorded in ``degraded``, down the ladder
        (:mod:`rag.retrieval.degradation_ladder`): skip rerank → lower dims → BM25 only; when no retriever
        is left, :class:`~rag.retrieval.degradation_ladder.RetrievalUnavailable` (the service then tries
        its cache). Without guards, a failing step raises :class:`~rag.retrieval.step_runner.StepFailed`.
        """
        return await self.prepare(query, plan, flt, on_step, guards).execute()

    def prepare(
        self,
        query: str,
        plan: QueryPlan,
        flt: SearchFilter | None = None,
        on_step: StepListener | None = None,
        guards: Guards | None = None,
    ) -> PipelineRun:
        """A run not yet started, for callers that need the query embedding first (the semantic cache):
        ``vector = await run.embed()``, then ``await run.execute()`` reuses it."""
        return PipelineRun(self, query, plan, flt or SearchFilter(), on_step, guards)

    def passage(self, hit: Hit) -> str:
        return self.snapshot.chunk(hit.chunk_id).passage

    def results(
        self,
        hits: list[Hit],
        top_k: int,
        *,
        outcome: SearchOutcome | None = None,
        group_by: GroupBy | None = None,
    ) -> list[Result]:
        """The first ``top_k`` hits as results, with the caller's (unscoped) document ids. With the run's
        ``outcome``, each carries its evidence (:mod:`rag.retrieval.explain`); with ``group_by`` "doc",
        its document's chunk count (:mod:`rag.retrieval.shaping`)."""
        head = hits[:top_k]
        snapshot = self.snapshot
        evidence = explain(outcome, head, snapshot.calibration) if outcome is not None else None
        counts = chunk_counts(snapshot) if group_by is GroupBy.DOC else None
        out = []
        for i, hit in enumerate(head):
            row = snapshot.chunk_rows[hit.chunk_id]
            chunk = snapshot.chunks[row]
            out.append(
                Result(
                    chunk.doc_id,
                    hit.score,
                    i + 1,
                    chunk.title,
                    chunk.text,
                    chunk.chunk_id,
                    chunk.metadata,
                    evidence[i] if evidence is not None else None,
                    int(counts[snapshot.chunk_doc[row]]) if counts is not None else None,
                )
            )
        return out
