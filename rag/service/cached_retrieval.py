"""Cached retrieval: the passages of one query, from the cheapest source that has them.

Order (invariants): L1 exact (in process, by normalised text), then identical concurrent misses join one
flight (single-flight, keyed by the exact key: the namespace digest holds the tenant), whose work is: the
query embedded once, L2 semantic (the same vector), then the pipeline under guards; a full (undegraded)
answer is cached; a degraded one is held briefly in L1 (marked ``cache``/``degraded_entry`` when served:
under load the repeats of a hot query stay cache hits) until the full answer replaces it. When no retriever
can run, a near-enough cached answer is served instead (``cache_only``), or :class:`RetrievalUnavailable`
goes on.

Redis is an optimisation here, never a dependency: :meth:`CachedRetrieval._through_redis` is the one place
a :class:`RedisUnavailable` becomes a ``cache``/``redis_unavailable`` degradation, and the whole retrieval
runs in one :func:`one_attempt` scope, so a failing Redis costs the request one timeout, not one per call.

Document ACLs (rag.acl): the namespace holds the request's access scope (when it hides anything), so L1,
single-flight and L2 only ever share an answer between callers of the same scope; and whatever the source
(computed, L1, L2, coalesced, cache-only), an answer under a scope is checked result by result against the
served version before it leaves (:func:`rag.retrieval.filters.visible`): a withheld result is a bug
upstream, counted in ``rag_acl_withheld_total`` and logged, never served.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import numpy as np

from rag import metrics
from rag.cache.keys import Namespace
from rag.cache.semantic import CacheHit, QueryCache
from rag.cache.singleflight import SingleFlight
from rag.resilience.deadline import Deadline
from rag.resilience.redis import RedisUnavailable, one_attempt
from rag.retrieval.degradation_ladder import RetrievalUnavailable
from rag.retrieval.filters import SearchFilter, visible
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.pipeline_run import PipelineRun
from rag.retrieval.plan import QueryPlan
from rag.retrieval.shaping import DEFAULT_SHAPE, Abstention, ResultShape, diversify
from rag.retrieval.step_runner import Guards, StepEvent, StepListener
from rag.routing.costs import Usage, usage_of
from rag.service.answer import AnswerCost
from rag.service.lifecycle import Lifecycle
from rag.types import CacheLevel, Degradation, DegradationCode, Result, Step, StepKey

log = logging.getLogger(__name__)
T = TypeVar("T")
CpuListener = Callable[[str, float, int], None]


@dataclass(frozen=True, slots=True)
class Retrieval:
    """One query's retrieval: what it asks and with what it runs (one index version for the request)."""

    tenant: str
    query: str
    top_k: int
    pipeline: SearchPipeline
    plan: QueryPlan
    flt: SearchFilter
    ns: Namespace
    deadline: Deadline
    record: StepListener
    shape: ResultShape = DEFAULT_SHAPE  # group_by / diversity (rag.retrieval.shaping): in the cache key


@dataclass(frozen=True, slots=True)
class Retrieved:
    """The retrieval part of an answer: what the cache keeps and what single-flight shares."""

    results: list[Result]
    degraded: tuple[Degradation, ...]
    cache: CacheLevel
    cost: AnswerCost
    index_version: str
    usage: Usage | None = None  # the work done (None: answered from the cache)
    abstained: Abstention | None = None  # the request's min_score left no result (never cached)

    @classmethod
    def from_cache(cls, hit: CacheHit, degraded: list[Degradation]) -> Retrieved:
        a = hit.answer
        held = held_degradations(a)
        return cls(
            results=[Result.from_dict(r) for r in a["results"]],
            degraded=(*held, *degraded),
            cache=hit.level,
            cost=AnswerCost(
                embedded_texts=1 if hit.level == CacheLevel.L2 else 0, rerank_pairs=0, candidates=0
            ),
            index_version=a["index_version"],
        )


def cache_entry(retrieved: Retrieved, plan: QueryPlan) -> dict[str, Any]:
    """What the cache stores of an answer (:class:`rag.cache.shared.CachedAnswer`); a degraded answer
    (held in L1 only) also says what it gave up, by its parts (:func:`held_degradations`)."""
    entry: dict[str, Any] = {
        "results": [asdict(r) for r in retrieved.results],
        "route": plan.route,
        "plan": plan.as_dict(),
        "index_version": retrieved.index_version,
    }
    if retrieved.degraded:
        entry["degraded"] = [
            {
                "step": d.step.step.value,
                "sub_query": d.step.sub_query,
                "code": d.code.value,
                "reason": d.reason,
            }
            for d in retrieved.degraded
        ]
    return entry


def held_degradations(answer: dict[str, Any]) -> list[Degradation]:
    """What a cached degraded answer gave up when it was computed, then the marker that it came from the
    cache; nothing for a full answer."""
    held = answer.get("degraded")
    if not held:
        return []
    out = [
        Degradation(StepKey(Step(d["step"]), d["sub_query"]), DegradationCode(d["code"]), d["reason"])
        for d in held
    ]
    out.append(
        Degradation(
            StepKey(Step.CACHE),
            DegradationCode.DEGRADED_ENTRY,
            "a degraded answer held briefly under load; the full answer replaces it once computed",
        )
    )
    return out


def _visible(r: Retrieval, retrieved: Retrieved) -> Retrieved:
    """``retrieved`` with only the results ``r.flt`` lets through (checked under an access scope; free
    without one)."""
    if r.flt.access is None:
        return retrieved
    results = visible(r.pipeline.snapshot, r.flt, retrieved.results)
    withheld = len(retrieved.results) - len(results)
    if not withheld:
        return retrieved
    metrics.ACL_WITHHELD.inc(withheld)
    log.error("withheld %d result(s) the caller may not see (tenant %s)", withheld, r.tenant)
    return replace(retrieved, results=results)


class CachedRetrieval:
    def __init__(self, lifecycle: Lifecycle, *, cpu: CpuListener) -> None:
        """``lifecycle`` holds the cache (once loaded), the breakers and the step-cost estimates; ``cpu``
        is told each CPU step's thread time (the cost model)."""
        self._lifecycle = lifecycle
        self._cpu = cpu
        self.flights: SingleFlight[Retrieved] = SingleFlight()

    async def retrieve(self, r: Retrieval) -> Retrieved:
        """The passages of ``r``; raises :class:`RetrievalUnavailable` (no retriever and no cached
        answer) and whatever the pipeline raises unguarded."""
        with one_attempt():  # Redis failing once costs this request one timeout, not one per call
            retrieved = await self._l1_or_flight(r)
        return _visible(r, retrieved)

    async def _l1_or_flight(self, r: Retrieval) -> Retrieved:
        cache = self._lifecycle.cache
        if cache is None:
            return await self._compute(r, None)
        degraded: list[Degradation] = []
        t0 = time.perf_counter()
        hit = await self._through_redis(cache.get_exact(r.ns, r.query), degraded, lookup=CacheLevel.L1)
        r.record(
            StepEvent(StepKey(Step.CACHE_L1), (time.perf_counter() - t0) * 1000.0, {"hit": hit is not None})
        )
        if hit is not None:
            return Retrieved.from_cache(hit, degraded)
        # the namespace digest holds the tenant: the exact key alone identifies the flight
        retrieved, shared = await self.flights.do(r.ns.exact_key(r.query), lambda: self._compute(r, cache))
        if shared:
            metrics.CACHE_COALESCED.inc()
            retrieved = replace(retrieved, cache=CacheLevel.COALESCED)
        return replace(retrieved, degraded=(*degraded, *retrieved.degraded))

    async def _compute(self, r: Retrieval, cache: QueryCache | None) -> Retrieved:
        """L2 (after embedding the query once), else the pipeline; a full answer is cached."""
        lifecycle = self._lifecycle
        guards = Guards(r.deadline, lifecycle.breakers, lifecycle.costs, cpu=self._cpu, lane=r.tenant)
        run = r.pipeline.prepare(r.query, r.plan, r.flt, r.record, guards)
        try:
            return await self._answer(r, run, cache)
        finally:
            run.close()  # work started for the run and not used: BM25 begun beside an L2 hit, a cancellation

    async def _answer(self, r: Retrieval, run: PipelineRun, cache: QueryCache | None) -> Retrieved:
        vector = await run.embed() if cache is not None else None
        degraded: list[Degradation] = []
        if cache is not None and vector is not None:
            hit = await self._l2(r, cache, vector, degraded)
            if hit is not None:
                return Retrieved.from_cache(hit, run.outcome.degraded + degraded)
        try:
            retrieved = await self._run(r, run, cache)
        except RetrievalUnavailable as exc:
            # the last rung: nothing could retrieve; a cached answer of a near-enough query may still do
            fallback = await self._cache_only(r, cache, vector)
            if fallback is None:
                raise
            why = Degradation(
                StepKey(Step.RETRIEVE),
                DegradationCode.CACHE_ONLY,
                f"no retriever available ({exc}); served from cache",
            )
            return Retrieved.from_cache(fallback, exc.degraded + degraded + [why])
        if cache is not None and not retrieved.degraded:
            await self._through_redis(
                cache.put(r.ns, r.query, vector, cache_entry(retrieved, r.plan)), degraded
            )
        elif cache is not None:  # held briefly, in this process only: the repeats stay hits under load
            cache.put_degraded(r.ns, r.query, cache_entry(retrieved, r.plan))
        return replace(retrieved, degraded=retrieved.degraded + tuple(degraded))

    async def _l2(
        self, r: Retrieval, cache: QueryCache, vector: np.ndarray, degraded: list[Degradation]
    ) -> CacheHit | None:
        t0 = time.perf_counter()
        idf = r.pipeline.snapshot.idf
        hit = await self._through_redis(
            cache.get_similar(r.ns, r.query, vector, idf), degraded, lookup=CacheLevel.L2
        )
        detail = {"hit": hit is not None, **({"similarity": round(hit.similarity, 4)} if hit else {})}
        r.record(StepEvent(StepKey(Step.CACHE_L2), (time.perf_counter() - t0) * 1000.0, detail))
        return hit

    async def _run(self, r: Retrieval, run: PipelineRun, cache: QueryCache | None) -> Retrieved:
        outcome = await run.execute()
        metrics.RERANK_PAIRS.labels(r.tenant).inc(outcome.rerank_pairs)
        hits, shape = outcome.hits, r.shape
        if shape.diversity > 0.0:  # MMR: bounded, but a matrix product: in the CPU pool
            p = r.pipeline
            hits = await p.compute.run(
                diversify, p.snapshot, hits, shape.diversity, r.top_k, r.plan.candidates, lane=r.tenant
            )
        return Retrieved(
            results=r.pipeline.results(hits, r.top_k, outcome=outcome, group_by=shape.group_by),
            degraded=tuple(outcome.degraded),
            cache=CacheLevel.MISS if cache is not None else CacheLevel.OFF,
            cost=AnswerCost(
                embedded_texts=outcome.embedded_texts,
                rerank_pairs=outcome.rerank_pairs,
                candidates=r.plan.candidates * len(r.plan.retrievers),
            ),
            index_version=r.pipeline.snapshot.version,
            usage=usage_of(outcome),
        )

    async def _cache_only(
        self, r: Retrieval, cache: QueryCache | None, vector: np.ndarray | None
    ) -> CacheHit | None:
        if cache is None or vector is None:
            return None
        unused: list[Degradation] = []  # without a cached answer the request fails: nothing to report
        return await self._through_redis(
            cache.get_similar(r.ns, r.query, vector, r.pipeline.snapshot.idf), unused
        )

    @staticmethod
    async def _through_redis(
        call: Awaitable[T], degraded: list[Degradation], *, lookup: CacheLevel | None = None
    ) -> T | None:
        """The one adapter between the cache's Redis calls and the answer: :class:`RedisUnavailable`
        becomes a ``cache``/``redis_unavailable`` degradation and None (a miss, or an unstored entry).
        ``lookup`` (``l1``, ``l2``): count the call in ``rag_cache_lookups_total`` as hit, miss or error."""
        try:
            value = await call
        except RedisUnavailable as exc:
            degraded.append(Degradation(StepKey(Step.CACHE), DegradationCode.REDIS_UNAVAILABLE, str(exc)))
            if lookup is not None:
                metrics.CACHE_LOOKUPS.labels(lookup.value, "error").inc()
            return None
        if lookup is not None:
            metrics.CACHE_LOOKUPS.labels(lookup.value, "hit" if value is not None else "miss").inc()
        return value
