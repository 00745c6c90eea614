"""One run of the pipeline for one query: the order of its steps and the rungs of the degradation ladder
it steps down. First the retrieval — BM25 beside embed → dense search, plus the multi-query lists — then
fusion, the rerank gate and the reranking. Every step goes through the :class:`StepRunner`; cancelling
the run (a client that went away) stops it at the next step: no later step starts."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from rag.rerank.cross_encoder import rerank
from rag.retrieval import degradation_ladder as ladder
from rag.retrieval.filters import LazyRowMask, SearchFilter
from rag.retrieval.list_fusion import fuse_lists
from rag.retrieval.multiquery import decompose
from rag.retrieval.plan import QueryPlan
from rag.retrieval.rerank_depth import agreement, gated_depth
from rag.retrieval.step_runner import Guards, SearchOutcome, StepListener, StepRunner
from rag.types import Hit, ListKey, Retriever, Step, StepKey

if TYPE_CHECKING:
    from rag.retrieval.pipeline import SearchPipeline

T = TypeVar("T")

BM25, DENSE = ListKey(Retriever.BM25), ListKey(Retriever.DENSE)


class PipelineRun:
    """One execution of the pipeline: its outcome so far and the guards it runs under."""

    def __init__(
        self,
        pipeline: SearchPipeline,
        query: str,
        plan: QueryPlan,
        flt: SearchFilter,
        on_step: StepListener | None,
        guards: Guards | None,
    ) -> None:
        self.p = pipeline
        self.query = query
        self.plan = plan
        self.flt = flt
        self.guards = guards
        self.outcome = SearchOutcome(hits=[])
        self.steps = StepRunner(self.outcome, guards, on_step, queues=pipeline.compute)
        self.lane = guards.lane if guards is not None else ""
        self.mask = LazyRowMask(pipeline.snapshot, flt)  # computed in the first retrieval step's thread
        self._embedded = False
        self._vector: np.ndarray | None = None
        self._floor: asyncio.Future[list[Hit] | None] | None = None

    async def start_floor(self) -> None:
        """Start the BM25 retrieval now, beside the embedding (guarded runs only): BM25 is the floor
        every answer stands on, and under load the embedding may queue for most of the deadline — a
        floor started only after it gives up would start too late. :meth:`execute` uses this retrieval
        (as the BM25 list, or as the stand-in of a dense-only plan); :meth:`close` drops it if unused.
        A dense-only plan gets it only when its embedding would queue. When BM25 is cheap enough to run
        inline (:meth:`Compute.runs_inline`) it is simply done now: no task, no turn of the loop."""
        if self._floor is not None or self.guards is None or not self.plan.retrievers:
            return
        if Retriever.BM25 not in self.plan.retrievers and self.steps.queue_estimate(Step.EMBED).wait_s <= 0.0:
            return
        if self.p.compute.runs_inline(Step.RETRIEVE_BM25):
            done: asyncio.Future[list[Hit] | None] = asyncio.get_running_loop().create_future()
            done.set_result(await self._bm25())
            self._floor = done
        else:
            self._floor = asyncio.ensure_future(self._bm25())

    def close(self) -> None:
        """Drop work started for this run and not used (an answer found in the cache meanwhile)."""
        if self._floor is not None and not self._floor.done():
            self._floor.cancel()

    async def embed(self, *, reserve_after_s: float | None = None) -> np.ndarray | None:
        """The query embedding (once per run; None when no embedder or the step degraded). BM25 starts
        beside it (:meth:`start_floor`), so a slow embedder still leaves a BM25 answer. The embedding is
        only worth having if the dense search can follow it in time: it is admitted with that search's
        cost and queue kept back (``reserve_after_s``, by default the full-dimension search's)."""
        if not self._embedded:
            self._embedded = True
            await self.start_floor()
            if reserve_after_s is None:
                reserve_after_s = self._search_after_embed_s(self.plan.dims)
            if self.p.embedder is not None:
                self._vector = await self.steps.guarded(
                    StepKey(Step.EMBED),
                    lambda: self.p.compute.embed_query(self.query, self.p.embedder),
                    reserve_after_s=reserve_after_s,
                )
                if self._vector is not None:
                    self.outcome.embedded_texts += 1
        return self._vector

    async def execute(self) -> SearchOutcome:
        """The steps, in order: retrieval, fusion, reranking (see :meth:`SearchPipeline.run`)."""
        p, plan, outcome = self.p, self.plan, self.outcome
        retrievals: dict[ListKey, Awaitable[list[Hit] | None]] = {}
        if Retriever.BM25 in plan.retrievers:
            await self.start_floor()  # (started already if the query was embedded first, for the cache)
            retrievals[BM25] = self._floor if self._floor is not None else self._bm25()
        if Retriever.DENSE in plan.retrievers:
            if p.dense is None or p.embedder is None:
                outcome.degraded.append(ladder.DENSE_UNAVAILABLE)
            else:
                retrievals[DENSE] = self._dense()
        if plan.multi_query:
            # in a worker thread: decomposition tokenises the query once per candidate cut
            parts = await p.compute.run(decompose, self.query, p.snapshot.analyzer, lane=self.lane)
            retrievals.update(self._multi_query_retrievals(DENSE in retrievals, parts[1:]))
        if BM25 not in retrievals and DENSE in retrievals:
            await self.start_floor()  # a dense-only plan whose embedding would queue: the stand-in, ready
        try:
            done = dict(zip(retrievals, await _all(list(retrievals.values())), strict=True))
            lists = {key: hits for key, hits in done.items() if hits is not None}
            if Retriever.DENSE in plan.retrievers and DENSE not in lists:
                if Retriever.BM25 not in plan.retrievers:  # only dense was asked for: BM25 stands in
                    hits = await (self._floor if self._floor is not None else self._bm25())
                    if hits is not None:
                        lists[BM25] = hits
                if lists:
                    outcome.degraded.append(ladder.BM25_ONLY)
        finally:
            self.close()  # dense answered a dense-only plan: its stand-in is not needed
        if not lists:
            raise ladder.RetrievalUnavailable(outcome.degraded, p.compute.retry_after_s())
        # fusion is small and bounded (candidates × lists, ~0.2 ms for two lists of 100): on the loop;
        # a trip through the CPU pool's queue would cost more than it under load
        fused = self.steps.cpu(Step.FUSE, partial(fuse_lists, lists, plan))
        hits = await self.steps.timed(StepKey(Step.FUSE), _now(fused))
        outcome.lists, outcome.fused = lists, hits if len(lists) > 1 else None
        depth = self._gated_depth(lists) if hits else 0
        if depth > 0:
            if p.reranker is None:  # none configured, or one refused for this collection (its record)
                outcome.degraded.append(p.rerank_refusal or ladder.RERANK_NOT_CONFIGURED)
            else:
                hits = await self._rerank(hits, depth)
        outcome.hits = hits
        return outcome

    def _gated_depth(self, lists: dict[ListKey, list[Hit]]) -> int:
        """The plan's rerank depth, or 0 when its gate finds the retrievers disagreeing (adaptive)."""
        plan = self.plan
        if plan.rerank_depth == 0 or plan.rerank_gate is None:
            return plan.rerank_depth
        bm25, dense = lists.get(BM25), lists.get(DENSE)
        share = (
            agreement([h.doc_id for h in bm25], [h.doc_id for h in dense])
            if bm25 is not None and dense is not None
            else None
        )
        depth = gated_depth(share, plan.rerank_gate, plan.rerank_depth)
        self.outcome.rerank_gate = {"agreement": share, "gate": plan.rerank_gate, "depth": depth}
        self.steps.announce(StepKey(Step.RERANK_GATE), dict(self.outcome.rerank_gate))
        return depth

    # -- the steps -----------------------------------------------------------------------------------
    async def _bm25(self, text: str | None = None, sub_query: int = 0) -> list[Hit] | None:
        retrieve = self.steps.cpu(
            Step.RETRIEVE_BM25,
            partial(self._masked, self.p.bm25.retrieve, text or self.query, self.plan.candidates),
        )
        step = StepKey(Step.RETRIEVE_BM25, sub_query)
        g = self.guards
        grace = ladder.floor_grace_s(g.deadline) if g is not None and sub_query == 0 else 0.0
        return await self.steps.guarded(
            step, lambda: self.p.compute.run(retrieve, lane=self.lane, step=Step.RETRIEVE_BM25), grace_s=grace
        )

    def _multi_query_retrievals(
        self, dense: bool, sub_queries: list[str]
    ) -> dict[ListKey, Awaitable[list[Hit] | None]]:
        """Multi-query: a PRF-expanded BM25 query, and BM25 (and dense) for each sub-query of a
        decomposable query; all fused with the original lists by weighted RRF
        (:func:`~rag.retrieval.list_fusion.list_weights`)."""
        p, plan = self.p, self.plan
        out: dict[ListKey, Awaitable[list[Hit] | None]] = {}
        if Retriever.BM25 in plan.retrievers:
            prf = self.steps.cpu(
                Step.RETRIEVE_BM25_PRF,
                partial(self._masked, p.bm25.retrieve_prf, self.query, plan.candidates),
            )
            prf_list = ListKey(Retriever.BM25, prf=True)
            out[prf_list] = self.steps.guarded(
                prf_list.step, lambda: p.compute.run(prf, lane=self.lane, step=Step.RETRIEVE_BM25_PRF)
            )
        for i, part in enumerate(sub_queries, start=1):
            if Retriever.BM25 in plan.retrievers:
                out[ListKey(Retriever.BM25, i)] = self._bm25(part, i)
            if dense:
                out[ListKey(Retriever.DENSE, i)] = self._dense_part(i, part)
        return out

    async def _dense_part(self, i: int, text: str) -> list[Hit] | None:
        p, plan = self.p, self.plan
        vector = await self.steps.guarded(StepKey(Step.EMBED, i), lambda: p.compute.embed_query(text))
        if vector is None:
            return None
        self.outcome.embedded_texts += 1
        search = self.steps.cpu(Step.RETRIEVE_DENSE, partial(self._search, vector, plan.dims, plan.rescore))
        return await self.steps.guarded(
            StepKey(Step.RETRIEVE_DENSE, i),
            lambda: p.compute.run(search, lane=self.lane),
            cost_key=Step.RETRIEVE_DENSE.cost_key(plan.dims),
        )

    def _search_after_embed_s(self, dims: int | None) -> float:
        """What the dense search at ``dims`` needs after the embedding: its cost and its queue (0 when the
        plan has no dense search or the run is unguarded)."""
        g = self.guards
        if g is None or g.costs is None or Retriever.DENSE not in self.plan.retrievers:
            return 0.0
        search = Step.RETRIEVE_DENSE
        return g.costs.estimate_s(search.cost_key(dims)) + self.steps.queue_estimate(search).wait_s

    def _search(self, vector: np.ndarray, dims: int | None, rescore: bool) -> list[Hit]:
        assert self.p.dense is not None
        return self.p.dense.retrieve(
            vector,
            self.plan.candidates,
            dims=dims,
            prefetch=self.plan.prefetch,
            rescore=rescore,
            flt=self.flt,
            mask=self.mask.get(),
        )

    def _masked(self, retrieve: Callable[..., list[Hit]], text: str, k: int) -> list[Hit]:
        """``retrieve(text, k, mask=…)`` with the filter's row mask, computed here in the worker thread."""
        return retrieve(text, k, mask=self.mask.get())

    async def _dense(self) -> list[Hit] | None:
        p, plan = self.p, self.plan
        assert p.dense is not None
        dims, rescore = plan.dims, plan.rescore
        g = self.guards
        lowered = None
        if g is not None and g.deadline is not None and g.costs is not None:
            embed_s = (
                0.0
                if self._embedded
                else g.costs.estimate_s(Step.EMBED) + self.steps.queue_estimate(Step.EMBED).wait_s
            )
            need = embed_s + g.costs.estimate_s(Step.RETRIEVE_DENSE.cost_key(dims))
            lowered = ladder.lower_dims(dims, need, g.deadline, g.reserve_s)
            if lowered is not None:
                dims, rescore = lowered[0], False
        search_key = Step.RETRIEVE_DENSE.cost_key(dims)
        vector = await self.embed(reserve_after_s=self._search_after_embed_s(dims))
        if vector is None:
            return None  # no search at any dimension: the embed step says why
        if lowered is not None:
            self.outcome.degraded.append(lowered[1])
        timed_search = self.steps.cpu(Step.RETRIEVE_DENSE, partial(self._search, vector, dims, rescore))
        return await self.steps.guarded(
            StepKey(Step.RETRIEVE_DENSE),
            lambda: p.compute.run(timed_search, lane=self.lane),
            cost_key=search_key,
            dims=dims or "full",
        )

    async def _rerank(self, hits: list[Hit], depth: int) -> list[Hit]:
        p = self.p
        assert p.reranker is not None
        g = self.guards
        if g is not None and g.deadline is not None and g.costs is not None:
            depth, shallower = ladder.shallower_rerank(
                depth, g.costs.estimate_s(Step.RERANK), g.deadline, g.reserve_s
            )
            if shallower is not None:
                self.outcome.degraded.append(shallower)
        head = hits[:depth]
        pairs = [(self.query, p.passage(h)) for h in head]
        scores = await self.steps.guarded(
            StepKey(Step.RERANK), lambda: p.compute.score_pairs(pairs), units=len(pairs), pairs=len(pairs)
        )
        if scores is None:
            return hits  # the first-stage order stands
        self.outcome.rerank_pairs = len(head)
        return rerank(
            hits,
            np.asarray(scores),
            depth=len(head),
            first_stage_weight=p.reranker.first_stage_weight,
            rrf_k=self.plan.rrf_k,
        )


async def _now(fn: Callable[[], T]) -> T:
    return fn()


async def _all(work: list[Awaitable[T]]) -> list[T]:
    """Run ``work`` concurrently; the first failure (or a cancellation) cancels the rest."""
    if len(work) == 1:
        return [await work[0]]
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
