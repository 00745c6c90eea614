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
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np

from rag.config import MATRYOSHKA_DIMS
from rag.dense.embedder import Embedder
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
from rag.types import Hit, Result

T = TypeVar("T")
_thread_loops = threading.local()


@dataclass(frozen=True, slots=True)
class Degradation:
    """A step that did not run as planned. ``code`` is a fixed vocabulary (metrics label it);
    ``reason`` says what happened in words."""

    step: str
    code: str
    reason: str


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


class RetrievalUnavailable(RuntimeError):
    """Every retriever of the plan failed or was skipped; ``degraded`` says why for each."""

    def __init__(self, degraded: list[Degradation]) -> None:
        super().__init__("; ".join(f"{d.step}: {d.reason}" for d in degraded) or "no retriever ran")
        self.degraded = degraded


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A finished step: its name (``retrieve.bm25``, ``embed``, ``rerank``, …), wall time and details."""

    step: str
    ms: float
    detail: dict[str, Any] = field(default_factory=dict)


StepListener = Callable[[StepEvent], None]


@dataclass(slots=True)
class SearchOutcome:
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank_pairs: int = 0
    embedded_texts: int = 0
    degraded: list[Degradation] = field(default_factory=list)
    rerank_gate: dict[str, Any] | None = None  # the adaptive-depth decision, when the plan has a gate


class StepFailed(RuntimeError):
    """A pipeline step failed; ``step`` names it."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step {step!r} failed: {cause}")
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
            if self.guards is not None and self.guards.costs is not None and "bm25" in self.plan.retrievers:
                reserve_after_s += self.guards.costs.estimate_s("retrieve.bm25")
            if self.p.embedder is not None:
                self._vector = await self._guarded(
                    "embed",
                    "embedder",
                    lambda: self.p.compute.embed_query(self.query),
                    reserve_after_s=reserve_after_s,
                )
                if self._vector is not None:
                    self.outcome.embedded_texts += 1
        return self._vector

    async def execute(self) -> SearchOutcome:
        p, plan, outcome = self.p, self.plan, self.outcome
        retrievals: dict[str, Awaitable[list[Hit] | None]] = {}
        if "bm25" in plan.retrievers:
            retrievals["bm25"] = self._bm25()
        if "dense" in plan.retrievers:
            if p.dense is None or p.embedder is None:
                outcome.degraded.append(
                    Degradation("retrieve.dense", "unavailable", "no dense index or embedder")
                )
            else:
                retrievals["dense"] = self._dense()
        if plan.multi_query:
            # in a worker thread: decomposition tokenises the query once per candidate cut
            parts = await p.compute.run(decompose, self.query, p.snapshot.analyzer)
            retrievals.update(self._multi_query_retrievals("dense" in retrievals, parts[1:]))
        done = dict(zip(retrievals, await _all(list(retrievals.values())), strict=True))
        lists = {name: hits for name, hits in done.items() if hits is not None}
        if "dense" in plan.retrievers and "dense" not in lists:
            if "bm25" not in plan.retrievers:  # only dense was asked for: BM25 stands in
                hits = await self._bm25()
                if hits is not None:
                    lists["bm25"] = hits
            if lists:
                outcome.degraded.append(
                    Degradation(
                        "retrieve", "bm25_only", "dense retrieval unavailable; answered by BM25 alone"
                    )
                )
        if not lists:
            raise RetrievalUnavailable(outcome.degraded)
        hits = await self._step("fuse", p.compute.run(self._cpu("fuse", partial(_fuse, lists, plan))))
        depth = self._gated_depth(lists) if hits else 0
        if depth > 0:
            if p.reranker is None:
                outcome.degraded.append(
                    Degradation("rerank", "not_configured", "no reranker configured (RAG_RERANKER_MODEL)")
                )
            else:
                hits = await self._rerank(hits, depth)
        outcome.hits = hits
        return outcome

    def _gated_depth(self, lists: dict[str, list[Hit]]) -> int:
        """The plan's rerank depth, or 0 when its gate finds the retrievers disagreeing (adaptive)."""
        plan = self.plan
        if plan.rerank_depth == 0 or plan.rerank_gate is None:
            return plan.rerank_depth
        share = (
            agreement([h.doc_id for h in lists["bm25"]], [h.doc_id for h in lists["dense"]])
            if "bm25" in lists and "dense" in lists
            else None
        )
        depth = gated_depth(share, plan.rerank_gate, plan.rerank_depth)
        self.outcome.rerank_gate = {"agreement": share, "gate": plan.rerank_gate, "depth": depth}
        if self.on_step is not None:
            self.on_step(StepEvent("rerank.gate", 0.0, dict(self.outcome.rerank_gate)))
        return depth

    # -- steps ---------------------------------------------------------------------------------------
    async def _bm25(self, text: str | None = None, step: str = "retrieve.bm25") -> list[Hit] | None:
        retrieve = self._cpu(
            "retrieve.bm25",
            partial(self._masked, self.p.bm25.retrieve, text or self.query, self.plan.candidates),
        )
        return await self._guarded(step, None, lambda: self.p.compute.run(retrieve), cost_key="retrieve.bm25")

    def _multi_query_retrievals(
        self, dense: bool, sub_queries: list[str]
    ) -> dict[str, Awaitable[list[Hit] | None]]:
        """Multi-query: a PRF-expanded BM25 query, and BM25 (and dense) for each sub-query of a
        decomposable query; all fused with the original lists by weighted RRF (:func:`list_weights`)."""
        p, plan = self.p, self.plan
        out: dict[str, Awaitable[list[Hit] | None]] = {}
        if "bm25" in plan.retrievers:
            prf = self._cpu(
                "retrieve.bm25.prf", partial(self._masked, p.bm25.retrieve_prf, self.query, plan.candidates)
            )
            out["bm25.prf"] = self._guarded("retrieve.bm25.prf", None, lambda: p.compute.run(prf))
        for i, part in enumerate(sub_queries, start=1):
            if "bm25" in plan.retrievers:
                out[f"bm25.q{i}"] = self._bm25(part, f"retrieve.bm25.q{i}")
            if dense:
                out[f"dense.q{i}"] = self._dense_part(i, part)
        return out

    async def _dense_part(self, i: int, text: str) -> list[Hit] | None:
        p, plan = self.p, self.plan
        vector = await self._guarded(
            f"embed.q{i}", "embedder", lambda: p.compute.embed_query(text), cost_key="embed"
        )
        if vector is None:
            return None
        self.outcome.embedded_texts += 1
        search = self._cpu("retrieve.dense", partial(self._search, vector, plan.dims, plan.rescore))
        return await self._guarded(
            f"retrieve.dense.q{i}", "qdrant", lambda: p.compute.run(search), cost_key=_dense_key(plan.dims)
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
        search_key = _dense_key(dims)
        g = self.guards
        if g is not None and g.deadline is not None and g.costs is not None:
            # the lower-dims rung: when the planned search does not fit in the time left, a lower
            # Matryoshka dimension without the full-dimension rescore may
            need = (0.0 if self._embedded else g.costs.estimate_s("embed")) + g.costs.estimate_s(search_key)
            if not g.deadline.fits(need, reserve_s=g.reserve_s) and dims != MATRYOSHKA_DIMS[0]:
                dims, rescore = MATRYOSHKA_DIMS[0], False
                search_key = _dense_key(dims)
                self.outcome.degraded.append(
                    Degradation(
                        "retrieve.dense",
                        "lower_dims",
                        f"~{need * 1000:.0f} ms needed at {plan.dims or 'full'} dims, "
                        f"{g.deadline.remaining_s() * 1000:.0f} ms left; searched at {dims} dims",
                    )
                )
        after_embed = g.costs.estimate_s(search_key) if g is not None and g.costs is not None else 0.0
        vector = await self.embed(reserve_after_s=after_embed)
        if vector is None:
            return None
        timed_search = self._cpu("retrieve.dense", partial(self._search, vector, dims, rescore))
        return await self._guarded(
            "retrieve.dense",
            "qdrant",
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
            "rerank", "reranker", lambda: p.compute.score_pairs(pairs), units=len(pairs), pairs=len(pairs)
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
        per_pair = g.costs.estimate_s("rerank")
        fit = affordable_pairs(g.deadline.remaining_s(), g.reserve_s, per_pair)
        if fit is None or fit >= depth or fit < MIN_USEFUL_DEPTH:
            return depth
        self.outcome.degraded.append(
            Degradation(
                "rerank",
                "shallower",
                f"~{per_pair * 1000:.1f} ms per pair, {g.deadline.remaining_s() * 1000:.0f} ms left: "
                f"reranked the top {fit} of {depth}",
            )
        )
        return fit

    def _cpu(self, step: str, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` with its thread CPU time reported to the cost model (when the guards have one)."""
        g = self.guards
        if g is None or g.cpu is None:
            return fn
        report = g.cpu
        return cpu_timed(fn, lambda seconds: report(step, seconds, 1))

    # -- how every step runs -------------------------------------------------------------------------
    async def _guarded(
        self,
        step: str,
        dependency: str | None,
        work: Callable[[], Awaitable[T]],
        *,
        units: int = 1,
        cost_key: str | None = None,
        reserve_after_s: float = 0.0,
        **detail: Any,
    ) -> T | None:
        """Run ``work`` as ``step``. Unguarded: failures raise :class:`StepFailed`. Guarded: a step that
        does not fit in the deadline is not started; one that fails, times out or meets an open breaker
        is recorded in ``degraded``; both return None."""
        g = self.guards
        if g is None:
            return await self._step(step, work(), **detail)
        key = cost_key or step
        reserve = g.reserve_s + reserve_after_s
        cost = g.costs.estimate_s(key, units) if g.costs is not None else 0.0
        timeout: float | None = None
        if g.deadline is not None:
            if not g.deadline.fits(cost, reserve_s=reserve):
                left = g.deadline.remaining_s() * 1000
                self.outcome.degraded.append(
                    Degradation(step, "deadline", f"~{cost * 1000:.0f} ms needed, {left:.0f} ms left")
                )
                return None
            timeout = g.deadline.timeout_s(reserve_s=reserve)
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

    async def _step(self, name: str, work: Awaitable[T], **detail: Any) -> T:
        start = time.perf_counter()
        try:
            result = await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise StepFailed(name, exc) from exc
        ms = (time.perf_counter() - start) * 1000.0
        self.outcome.timings_ms[name] = ms
        if self.on_step is not None:
            if isinstance(result, list):
                detail["hits"] = len(result)
            self.on_step(StepEvent(name, ms, detail))
        return result


def _dense_key(dims: int | None) -> str:
    return f"retrieve.dense@{dims or 'full'}"


def failure_degradation(step: str, cause: BaseException | None, timeout_s: float | None) -> Degradation:
    """How a failed step reads in ``degraded``: an open breaker, a timeout, or an error."""
    if isinstance(cause, BreakerOpen):
        return Degradation(step, "breaker_open", str(cause))
    if isinstance(cause, TimeoutError):
        limit = f" after {timeout_s * 1000:.0f} ms" if timeout_s is not None else ""
        return Degradation(step, "timeout", f"timed out{limit} (deadline)")
    return Degradation(step, "error", f"{type(cause).__name__}: {cause}"[:200])


async def _bounded(work: Awaitable[T], timeout_s: float | None) -> T:
    return await (work if timeout_s is None else asyncio.wait_for(work, timeout=timeout_s))


PRF_WEIGHT = 0.5  # of the BM25 weight: the expanded query re-ranks what the original found


def list_weights(names: Sequence[str], weights: Mapping[str, float]) -> dict[str, float]:
    """Fusion weight of each ranked list: ``bm25`` / ``dense`` as planned; a PRF list half its
    retriever's; each sub-query's list an equal share of its retriever's (``bm25.q1``, ``dense.q2``…)."""
    parts = {name.split(".")[0]: 0 for name in names}
    for name in names:
        if ".q" in name:
            parts[name.split(".")[0]] += 1
    out = {}
    for name in names:
        base = name.split(".")[0]
        w = weights.get(base, 1.0)
        out[name] = w * PRF_WEIGHT if name.endswith(".prf") else w / parts[base] if ".q" in name else w
    return out


def _fuse(lists: dict[str, list[Hit]], plan: QueryPlan) -> list[Hit]:
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
