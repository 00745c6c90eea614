"""The search pipeline: one object owns the order of steps, times each of them and reports each as it
completes.

The pipeline is written once, as a coroutine. Where its work runs is the job of a :class:`Compute`:
:class:`InlineCompute` runs everything in the caller's thread (the CLI and evaluation, through
:meth:`SearchPipeline.search`); the service's compute runs CPU work in threads and micro-batches model
calls across concurrent requests (``rag.service.batching``). Cancelling the coroutine (a client that went
away) stops it at the next step: no later step starts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np

from rag.dense.embedder import Embedder
from rag.config import MATRYOSHKA_DIMS
from rag.errors import RagError
from rag.fusion import fuse
from rag.index.snapshot import IndexSnapshot
from rag.rerank.cross_encoder import Pair, Reranker, rerank
from rag.resilience.breaker import Breaker, BreakerOpen
from rag.resilience.deadline import Deadline, StepCosts
from rag.retrieval.filters import LazyRowMask, SearchFilter
from rag.retrieval.multiquery import decompose
from rag.retrieval.plan import QueryPlan
from rag.retrieval.retrievers import BM25Retriever, DenseRetriever
from rag.routing.adaptive import MIN_USEFUL_DEPTH, affordable_pairs, agreement, gated_depth
from rag.routing.costs import cpu_timed
from rag.types import (
    Degradation,
    DegradationCode,
    Hit,
    ListKey,
    Result,
    Retriever,
    Step,
    StepKey,
)

T = TypeVar("T")
_thread_loops = threading.local()


@dataclass(slots=True)
class Guards:
    """What makes a run resilient: a deadline split across steps, a breaker per dependency
    (``embedder``, ``qdrant``, ``reranker``) and the running step-cost estimates that decide whether a step
    fits in the time left. Without guards (the CLI, evaluation) a failing step fails the run."""

    deadline: Deadline | None = None
    breakers: Mapping[str, Breaker] = field(default_factory=dict)
    costs: StepCosts | None = None
    reserve_s: float = 0.005  # kept back for fusion and the response
    cpu: Callable[[str, float, int], None] | None = None  # told each CPU step's thread time (cost model)


class RetrievalUnavailable(RagError, RuntimeError):
    """Every retriever of the plan failed or was skipped; ``degraded`` says why for each."""

    def __init__(self, degraded: list[Degradation]) -> None:
        super().__init__("; ".join(f"{d.step}: {d.reason}" for d in degraded) or "no retriever ran")
        self.degraded = degraded


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A finished step (``retrieve.bm25``, ``embed``, ``rerank``, …), its wall time and details."""

    step: StepKey
    ms: float
    detail: dict[str, Any] = field(default_factory=dict)


StepListener = Callable[[StepEvent], None]


@dataclass(slots=True)
class SearchOutcome:
    hits: list[Hit]
    timings: dict[StepKey, float] = field(default_factory=dict)  # wall ms of each step that ran, in order
    rerank_pairs: int = 0
    embedded_texts: int = 0
    degraded: list[Degradation] = field(default_factory=list)
    rerank_gate: dict[str, Any] | None = None  # the adaptive-depth decision, when the plan has a gate

    @property
    def timings_ms(self) -> dict[str, float]:
        """``timings`` by wire name (``retrieve.bm25.q1``)."""
        return {str(step): ms for step, ms in self.timings.items()}


class StepFailed(RagError, RuntimeError):
    """A pipeline step failed; ``step`` names it."""

    def __init__(self, step: StepKey, cause: BaseException) -> None:
        super().__init__(f"step {str(step)!r} failed: {cause}")
        self.step = step


class Compute(Protocol):
    """Where the pipeline's work runs."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """CPU work that is not a model call (BM25, the vector search, fusion)."""
        ...

    async def embed_query(self, text: str) -> np.ndarray: ...

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray: ...


class InlineCompute:
    """Everything in the calling thread, one query at a time."""

    def __init__(self, embedder: Embedder | None, reranker: Reranker | None) -> None:
        self.embedder = embedder
        self.reranker = reranker

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def embed_query(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        return self.embedder.embed([text])[0]

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        assert self.reranker is not None
        return self.reranker.score_pairs(pairs)


class SearchPipeline:
    def __init__(
        self,
        snapshot: IndexSnapshot,
        embedder: Embedder | None,
        dense: DenseRetriever | None,
        reranker: Reranker | None = None,
        compute: Compute | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.embedder = embedder
        self.bm25 = BM25Retriever(snapshot)
        self.dense = dense
        self.reranker = reranker
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
        deadline is skipped and recorded in ``degraded``, down the ladder: skip rerank → lower dims →
        BM25 only; when no retriever is left, :class:`RetrievalUnavailable` (the service then tries its
        cache). Without guards, a failing step raises :class:`StepFailed`.
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

    def results(self, hits: list[Hit], top_k: int) -> list[Result]:
        """The first ``top_k`` hits as results, with the caller's (unscoped) document ids."""
        out = []
        for rank, hit in enumerate(hits[:top_k], start=1):
            chunk = self.snapshot.chunk(hit.chunk_id)
            out.append(
                Result(chunk.doc_id, hit.score, rank, chunk.title, chunk.text, chunk.chunk_id, chunk.metadata)
            )
        return out


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
        self.on_step = on_step
        self.guards = guards
        self.outcome = SearchOutcome(hits=[])
        self.mask = LazyRowMask(pipeline.snapshot, flt)  # computed in the first retrieval step's thread
        self._embedded = False
        self._vector: np.ndarray | None = None

    async def embed(self, *, reserve_after_s: float = 0.0) -> np.ndarray | None:
        """The query embedding (once per run; None when no embedder or the step degraded). Its timeout
        leaves time for BM25 as well, so that a slow embedder still leaves a BM25 answer."""
        if not self._embedded:
            self._embedded = True
            costs = self.guards.costs if self.guards is not None else None
            if costs is not None and Retriever.BM25 in self.plan.retrievers:
                reserve_after_s += costs.estimate_s(Step.RETRIEVE_BM25)
            if self.p.embedder is not None:
                self._vector = await self._guarded(
                    StepKey(Step.EMBED),
                    lambda: self.p.compute.embed_query(self.query),
                    reserve_after_s=reserve_after_s,
                )
                if self._vector is not None:
                    self.outcome.embedded_texts += 1
        return self._vector

    async def execute(self) -> SearchOutcome:
        p, plan, outcome = self.p, self.plan, self.outcome
        bm25, dense = ListKey(Retriever.BM25), ListKey(Retriever.DENSE)
        retrievals: dict[ListKey, Awaitable[list[Hit] | None]] = {}
        if Retriever.BM25 in plan.retrievers:
            retrievals[bm25] = self._bm25()
        if Retriever.DENSE in plan.retrievers:
            if p.dense is None or p.embedder is None:
                outcome.degraded.append(
                    Degradation(
                        StepKey(Step.RETRIEVE_DENSE),
                        DegradationCode.UNAVAILABLE,
                        "no dense index or embedder",
                    )
                )
            else:
                retrievals[dense] = self._dense()
        if plan.multi_query:
            # in a worker thread: decomposition tokenises the query once per candidate cut
            parts = await p.compute.run(decompose, self.query, p.snapshot.analyzer)
            retrievals.update(self._multi_query_retrievals(dense in retrievals, parts[1:]))
        done = dict(zip(retrievals, await _all(list(retrievals.values())), strict=True))
        lists = {name: hits for name, hits in done.items() if hits is not None}
        if Retriever.DENSE in plan.retrievers and dense not in lists:
            if Retriever.BM25 not in plan.retrievers:  # only dense was asked for: BM25 stands in
                hits = await self._bm25()
                if hits is not None:
                    lists[bm25] = hits
            if lists:
                outcome.degraded.append(
                    Degradation(
                        StepKey(Step.RETRIEVE),
                        DegradationCode.BM25_ONLY,
                        "dense retrieval unavailable; answered by BM25 alone",
                    )
                )
        if not lists:
            raise RetrievalUnavailable(outcome.degraded)
        fused = self._cpu(Step.FUSE, partial(_fuse, lists, plan))
        hits = await self._step(StepKey(Step.FUSE), p.compute.run(fused))
        depth = self._gated_depth(lists) if hits else 0
        if depth > 0:
            if p.reranker is None:
                outcome.degraded.append(
                    Degradation(
                        StepKey(Step.RERANK),
                        DegradationCode.NOT_CONFIGURED,
                        "no reranker configured (RAG_RERANKER_MODEL)",
                    )
                )
            else:
                hits = await self._rerank(hits, depth)
        outcome.hits = hits
        return outcome

    def _gated_depth(self, lists: dict[ListKey, list[Hit]]) -> int:
        """The plan's rerank depth, or 0 when its gate finds the retrievers disagreeing (adaptive)."""
        plan = self.plan
        if plan.rerank_depth == 0 or plan.rerank_gate is None:
            return plan.rerank_depth
        bm25, dense = lists.get(ListKey(Retriever.BM25)), lists.get(ListKey(Retriever.DENSE))
        share = (
            agreement([h.doc_id for h in bm25], [h.doc_id for h in dense])
            if bm25 is not None and dense is not None
            else None
        )
        depth = gated_depth(share, plan.rerank_gate, plan.rerank_depth)
        self.outcome.rerank_gate = {"agreement": share, "gate": plan.rerank_gate, "depth": depth}
        if self.on_step is not None:
            self.on_step(StepEvent(StepKey(Step.RERANK_GATE), 0.0, dict(self.outcome.rerank_gate)))
        return depth

    # -- steps ---------------------------------------------------------------------------------------
    async def _bm25(self, text: str | None = None, sub_query: int = 0) -> list[Hit] | None:
        retrieve = self._cpu(
            Step.RETRIEVE_BM25,
            partial(self._masked, self.p.bm25.retrieve, text or self.query, self.plan.candidates),
        )
        step = StepKey(Step.RETRIEVE_BM25, sub_query)
        return await self._guarded(step, lambda: self.p.compute.run(retrieve))

    def _multi_query_retrievals(
        self, dense: bool, sub_queries: list[str]
    ) -> dict[ListKey, Awaitable[list[Hit] | None]]:
        """Multi-query: a PRF-expanded BM25 query, and BM25 (and dense) for each sub-query of a
        decomposable query; all fused with the original lists by weighted RRF (:func:`list_weights`)."""
        p, plan = self.p, self.plan
        out: dict[ListKey, Awaitable[list[Hit] | None]] = {}
        if Retriever.BM25 in plan.retrievers:
            prf = self._cpu(
                Step.RETRIEVE_BM25_PRF,
                partial(self._masked, p.bm25.retrieve_prf, self.query, plan.candidates),
            )
            prf_list = ListKey(Retriever.BM25, prf=True)
            out[prf_list] = self._guarded(prf_list.step, lambda: p.compute.run(prf))
        for i, part in enumerate(sub_queries, start=1):
            if Retriever.BM25 in plan.retrievers:
                out[ListKey(Retriever.BM25, i)] = self._bm25(part, i)
            if dense:
                out[ListKey(Retriever.DENSE, i)] = self._dense_part(i, part)
        return out

    async def _dense_part(self, i: int, text: str) -> list[Hit] | None:
        p, plan = self.p, self.plan
        vector = await self._guarded(StepKey(Step.EMBED, i), lambda: p.compute.embed_query(text))
        if vector is None:
            return None
        self.outcome.embedded_texts += 1
        search = self._cpu(Step.RETRIEVE_DENSE, partial(self._search, vector, plan.dims, plan.rescore))
        return await self._guarded(
            StepKey(Step.RETRIEVE_DENSE, i),
            lambda: p.compute.run(search),
            cost_key=Step.RETRIEVE_DENSE.cost_key(plan.dims),
        )

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
        search_key = Step.RETRIEVE_DENSE.cost_key(dims)
        g = self.guards
        if g is not None and g.deadline is not None and g.costs is not None:
            # the lower-dims rung: when the planned search does not fit in the time left, a lower
            # Matryoshka dimension without the full-dimension rescore may
            need = (0.0 if self._embedded else g.costs.estimate_s(Step.EMBED)) + g.costs.estimate_s(
                search_key
            )
            if not g.deadline.fits(need, reserve_s=g.reserve_s) and dims != MATRYOSHKA_DIMS[0]:
                dims, rescore = MATRYOSHKA_DIMS[0], False
                search_key = Step.RETRIEVE_DENSE.cost_key(dims)
                self.outcome.degraded.append(
                    Degradation(
                        StepKey(Step.RETRIEVE_DENSE),
                        DegradationCode.LOWER_DIMS,
                        f"~{need * 1000:.0f} ms needed at {plan.dims or 'full'} dims, "
                        f"{g.deadline.remaining_s() * 1000:.0f} ms left; searched at {dims} dims",
                    )
                )
        after_embed = g.costs.estimate_s(search_key) if g is not None and g.costs is not None else 0.0
        vector = await self.embed(reserve_after_s=after_embed)
        if vector is None:
            return None
        timed_search = self._cpu(Step.RETRIEVE_DENSE, partial(self._search, vector, dims, rescore))
        return await self._guarded(
            StepKey(Step.RETRIEVE_DENSE),
            lambda: p.compute.run(timed_search),
            cost_key=search_key,
            dims=dims or "full",
        )

    async def _rerank(self, hits: list[Hit], depth: int) -> list[Hit]:
        p = self.p
        assert p.reranker is not None
        depth = self._fitted_depth(depth)
        head = hits[:depth]
        pairs = [(self.query, p.passage(h)) for h in head]
        scores = await self._guarded(
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

    def _fitted_depth(self, depth: int) -> int:
        """``depth`` cut to the pairs that fit in the time left (when at least a useful few do; fewer
        than that and the guarded step skips the rerank as ``deadline``)."""
        g = self.guards
        if g is None or g.deadline is None or g.costs is None:
            return depth
        per_pair = g.costs.estimate_s(Step.RERANK)
        fit = affordable_pairs(g.deadline.remaining_s(), g.reserve_s, per_pair)
        if fit is None or fit >= depth or fit < MIN_USEFUL_DEPTH:
            return depth
        self.outcome.degraded.append(
            Degradation(
                StepKey(Step.RERANK),
                DegradationCode.SHALLOWER,
                f"~{per_pair * 1000:.1f} ms per pair, {g.deadline.remaining_s() * 1000:.0f} ms left: "
                f"reranked the top {fit} of {depth}",
            )
        )
        return fit

    def _cpu(self, step: Step, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` with its thread CPU time reported to the cost model (when the guards have one)."""
        g = self.guards
        if g is None or g.cpu is None:
            return fn
        report = g.cpu
        return cpu_timed(fn, lambda seconds: report(step, seconds, 1))

    # -- how every step runs -------------------------------------------------------------------------
    async def _guarded(
        self,
        step: StepKey,
        work: Callable[[], Awaitable[T]],
        *,
        units: int = 1,
        cost_key: str | None = None,
        reserve_after_s: float = 0.0,
        **detail: Any,
    ) -> T | None:
        """Run ``work`` as ``step``, behind the breaker of the step's dependency. Unguarded: failures
        raise :class:`StepFailed`. Guarded: a step that does not fit in the deadline is not started; one
        that fails, times out or meets an open breaker is recorded in ``degraded``; both return None.
        ``cost_key`` names its wall-time estimate (default: the step, whatever its sub-query)."""
        g = self.guards
        if g is None:
            return await self._step(step, work(), **detail)
        key = cost_key or step.step.value
        reserve = g.reserve_s + reserve_after_s
        cost = g.costs.estimate_s(key, units) if g.costs is not None else 0.0
        timeout: float | None = None
        if g.deadline is not None:
            if not g.deadline.fits(cost, reserve_s=reserve):
                left = g.deadline.remaining_s() * 1000
                self.outcome.degraded.append(
                    Degradation(
                        step, DegradationCode.DEADLINE, f"~{cost * 1000:.0f} ms needed, {left:.0f} ms left"
                    )
                )
                return None
            timeout = g.deadline.timeout_s(reserve_s=reserve)
        dependency = step.dependency
        breaker = g.breakers.get(dependency) if dependency is not None else None
        start = time.perf_counter()
        try:
            if breaker is not None:
                result = await self._step(step, breaker.call(work, timeout_s=timeout), **detail)
            else:
                result = await self._step(step, _bounded(work(), timeout), **detail)
        except StepFailed as failed:
            self.outcome.degraded.append(failure_degradation(step, failed.__cause__, timeout))
            return None
        if g.costs is not None:
            g.costs.observe(key, time.perf_counter() - start, units)
        return result

    async def _step(self, name: StepKey, work: Awaitable[T], **detail: Any) -> T:
        start = time.perf_counter()
        try:
            result = await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise StepFailed(name, exc) from exc
        ms = (time.perf_counter() - start) * 1000.0
        self.outcome.timings[name] = ms
        if self.on_step is not None:
            if isinstance(result, list):
                detail["hits"] = len(result)
            self.on_step(StepEvent(name, ms, detail))
        return result


def failure_degradation(step: StepKey, cause: BaseException | None, timeout_s: float | None) -> Degradation:
    """How a failed step reads in ``degraded``: an open breaker, a timeout, or an error."""
    if isinstance(cause, BreakerOpen):
        return Degradation(step, DegradationCode.BREAKER_OPEN, str(cause))
    if isinstance(cause, TimeoutError):
        limit = f" after {timeout_s * 1000:.0f} ms" if timeout_s is not None else ""
        return Degradation(step, DegradationCode.TIMEOUT, f"timed out{limit} (deadline)")
    return Degradation(step, DegradationCode.ERROR, f"{type(cause).__name__}: {cause}"[:200])


async def _bounded(work: Awaitable[T], timeout_s: float | None) -> T:
    return await (work if timeout_s is None else asyncio.wait_for(work, timeout=timeout_s))


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


def _fuse(lists: dict[ListKey, list[Hit]], plan: QueryPlan) -> list[Hit]:
    if len(lists) == 1:
        return next(iter(lists.values()))
    return fuse(plan.fusion, lists, list_weights(list(lists), plan.weights), rrf_k=plan.rrf_k)


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
