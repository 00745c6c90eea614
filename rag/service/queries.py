"""The query handler: one query from request to answer.

:meth:`QueryHandler.query` reads in the order the work happens: decide (the routing decision and its
plan), cached retrieval (L1 / single-flight / L2 / pipeline, then settled with the routing state),
synthesize (optional), observe (degradation and latency metrics), shadow (a sampled candidate plan,
in the background). Invariants: the filters are validated and readiness checked before any work; one
index version serves the whole request, even if an ingest lands meanwhile; one deadline covers every
step; a query is settled (cost, budget, fallback windows, the decision feedback looks up) whether it
succeeded or failed, but not when the client went away.

Document ACLs (rag.acl): the request's caller and its tenant's default make an access scope, part of the
search filter from the start (every retriever, the shadow run) and, where it hides anything in the served
version, of the cache namespace; every answer served under a scope is checked result by result whatever
its source (:meth:`rag.service.cached_retrieval.CachedRetrieval.retrieve`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from rag import metrics
from rag.acl import AccessScope, AclDefault, tenant_defaults
from rag.cache.keys import IndexIdentity, Namespace
from rag.candidates import CANDIDATE_FLAG
from rag.config import Settings
from rag.logs import request_id_var
from rag.resilience.deadline import Deadline
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import QueryPlan
from rag.retrieval.shaping import ShapeError, at_least
from rag.retrieval.step_runner import StepEvent, StepListener
from rag.rollout.config import Profile
from rag.rollout.flags import CONTROL
from rag.routing.vocabulary import tenant_idf
from rag.service.answer import QueryAnswer, QueryRequest
from rag.service.cached_retrieval import CachedRetrieval, Retrieval, Retrieved
from rag.service.lifecycle import Lifecycle
from rag.service.planning import RoutingDecision
from rag.service.routing import QueryRouting
from rag.service.shadow import ShadowRunner
from rag.service.synthesis import AnswerSynthesis, Synthesized
from rag.types import Degradation, Step, StepKey

# Query analysis costs ~70 µs for a typical query and grows linearly to ~1-2 ms at the 2,048-character
# limit; past this length a worker-thread hand-off (~50-100 µs) is the smaller cost to the event loop.
ANALYZE_OFF_LOOP_CHARS = 256


class Timeline:
    """The steps of one query as they finish: kept for ``timings_ms``, observed in the step-latency
    metric, and passed on (the event stream)."""

    def __init__(self, on_step: StepListener | None) -> None:
        self.events: list[StepEvent] = []
        self._on_step = on_step

    def record(self, event: StepEvent) -> None:
        self.events.append(event)
        metrics.STEP_LATENCY.labels(str(event.step)).observe(event.ms / 1000.0)
        if self._on_step is not None:
            self._on_step(event)

    def timings_ms(self) -> dict[str, float]:
        return {str(e.step): round(e.ms, 3) for e in self.events}


class QueryHandler:
    def __init__(
        self,
        settings: Settings,
        lifecycle: Lifecycle,
        routing: QueryRouting,
        retrieval: CachedRetrieval,
        synthesis: AnswerSynthesis,
        shadows: ShadowRunner,
    ) -> None:
        self._settings = settings
        self._lifecycle = lifecycle
        self._routing = routing
        self._retrieval = retrieval
        self._synthesis = synthesis
        self._shadows = shadows
        self._acl_default = AclDefault(settings.acl_default)
        self._acl_defaults = tenant_defaults(settings.acl_default_tenants)

    def check(self, request: QueryRequest) -> None:
        """Raise what :meth:`query` would raise before doing any work (NotReady, FilterError)."""
        SearchFilter.of(request.tenant, request.filters)
        serving = self._lifecycle.serving()
        if request.min_score is not None and serving.pipeline.snapshot.calibration is None:
            raise ShapeError(
                "min_score",
                "this collection has no calibrated confidence scale: `rag tune` fits one (leave min_score "
                "out until then)",
            )

    def access(self, request: QueryRequest) -> AccessScope:
        """What ``request``'s caller may see: its entries (none: anonymous) under its tenant's default."""
        default = self._acl_defaults.get(request.tenant, self._acl_default)
        return AccessScope.of(request.caller, default)

    async def query(self, request: QueryRequest, on_step: StepListener | None = None) -> QueryAnswer:
        """Answer one query for its tenant within the deadline. Raises :class:`NotReady`,
        ``FilterError`` (bad filters), ``OverBudgetError`` (the tenant's hard budget) or
        :class:`RetrievalUnavailable` (no retriever and no cached answer); cancelling the call stops the
        pipeline at its next step."""
        started = time.perf_counter()
        scope = self.access(request)
        flt = SearchFilter.of(request.tenant, request.filters, access=scope)  # validate before any work
        pipeline = self._lifecycle.serving().pipeline  # one version for the request, even if one lands
        deadline = Deadline.after_ms(self._settings.deadline_ms)
        timeline, request_id = Timeline(on_step), request_id_var.get() or ""
        decision = await self._decide(request, pipeline, timeline)
        pipeline = self._candidate_or(pipeline, decision)
        # no scope where it hides nothing in the version that answers: as before ACLs, the same cache keys
        flt = flt.within(pipeline.snapshot)
        retrieval = self._retrieval_of(request, pipeline, decision.plan, flt, deadline, timeline)
        retrieved = await self._retrieve_and_settle(request, decision, retrieval, request_id, started)
        synthesized = await self._synthesize(request, retrieval, retrieved)
        degraded = retrieved.degraded + synthesized.degraded
        took_ms = (time.perf_counter() - started) * 1000.0
        _observe(decision.plan, degraded, took_ms)
        self._shadow(request, pipeline, scope, decision, retrieved, request_id, took_ms)
        await self._routing.learner.remembered(request.tenant, request_id)  # feedback may go anywhere now
        return QueryAnswer(
            request_id=request_id,
            results=retrieved.results,
            decision=decision,
            degraded=degraded,
            cache=retrieved.cache,
            timings_ms=timeline.timings_ms(),
            cost=synthesized.cost,
            index_version=retrieved.index_version,
            took_ms=round(took_ms, 3),
            answer=synthesized.answer,
            abstained=retrieved.abstained,
        )

    # -- decide ----------------------------------------------------------------------------------------
    async def _decide(
        self, request: QueryRequest, pipeline: SearchPipeline, timeline: Timeline
    ) -> RoutingDecision:
        """The routing decision (raises ``OverBudgetError``: a tenant refused past its budget)."""
        t0 = time.perf_counter()
        routing = self._routing
        profile = request.profile or Profile(self._settings.profile)
        version = pipeline.snapshot.version
        idf = tenant_idf(pipeline.snapshot, request.tenant)  # never another tenant's vocabulary
        features = None
        if len(request.query) > ANALYZE_OFF_LOOP_CHARS and routing.planner.needs_analysis(
            request.tenant, request.query, version
        ):  # analysis is linear in the query's length: a long one is analysed off the event loop
            features = await asyncio.to_thread(routing.planner.analyze, request.query, idf)
        decision = routing.planner.decide(
            request.tenant,
            request.query,
            idf=idf,
            profile=profile,
            top_k=request.top_k,
            session_id=request.session_id,
            version=version,
            features=features,
            fusion=pipeline.snapshot.tuned_fusion,
        )
        routed = decision.routed
        detail = {
            "route": decision.plan.route,
            "profile": profile,
            "arm": routed.arm.value,
            "policy": routed.policy,
        }
        timeline.record(StepEvent(StepKey(Step.PLAN), (time.perf_counter() - t0) * 1000.0, detail))
        return decision

    def _candidate_or(self, pipeline: SearchPipeline, decision: RoutingDecision) -> SearchPipeline:
        """The staged candidate collection's pipeline for a request the flag ``candidate_index`` assigns to
        it (A/B of a new embedder, :mod:`rag.candidates`; auto-fallback sets it back to control), else
        ``pipeline``. Its index version and embedder name its cache namespace, apart from the served one's."""
        if decision.variants.get(CANDIDATE_FLAG, CONTROL) == CONTROL:
            return pipeline
        candidate = self._lifecycle.candidate
        return candidate.pipeline if candidate is not None else pipeline

    # -- cached retrieval, settled ---------------------------------------------------------------------
    def _retrieval_of(
        self,
        request: QueryRequest,
        pipeline: SearchPipeline,
        plan: QueryPlan,
        flt: SearchFilter,
        deadline: Deadline,
        timeline: Timeline,
    ) -> Retrieval:
        index = IndexIdentity.of_snapshot(self._settings.collection, pipeline.snapshot)
        model = pipeline.embedder.name if pipeline.embedder is not None else "-"
        ns = Namespace.of(
            request.tenant,
            index,
            model,
            {"plan": plan.as_dict(), "filters": request.filters or {}, **request.shape.key_params()},
            access=flt.access.key if flt.access is not None else "",
        )
        return Retrieval(
            request.tenant,
            request.query,
            request.top_k,
            pipeline,
            plan,
            flt,
            ns,
            deadline,
            timeline.record,
            request.shape,
        )

    async def _retrieve_and_settle(
        self,
        request: QueryRequest,
        decision: RoutingDecision,
        retrieval: Retrieval,
        request_id: str,
        started: float,
    ) -> Retrieved:
        """The cached retrieval, counted in flight and in ``rag_queries_total``, then settled — when it
        failed too (the fallback windows count failures), but not when the client went away."""
        metrics.INFLIGHT.inc()
        status, retrieved = "error", None
        try:
            retrieved = await self._retrieval.retrieve(retrieval)
            if request.min_score is not None:  # after the cache: cached answers are floored alike
                kept, abstained = at_least(retrieved.results, request.min_score)
                retrieved = replace(retrieved, results=kept, abstained=abstained)
            status = "degraded" if retrieved.degraded else "ok"
        except asyncio.CancelledError:
            status = "cancelled"  # the client went away
            raise
        finally:
            metrics.INFLIGHT.dec()
            cache = retrieved.cache.value if retrieved is not None else "none"
            metrics.QUERIES.labels(request.tenant, retrieval.plan.route, status, cache).inc()
            if status != "cancelled":
                latency_s = time.perf_counter() - started
                retrieved = self._settle(request, decision, retrieved, request_id, status, latency_s)
        assert retrieved is not None
        return retrieved

    def _settle(
        self,
        request: QueryRequest,
        decision: RoutingDecision,
        retrieved: Retrieved | None,
        request_id: str,
        status: str,
        latency_s: float,
    ) -> Retrieved | None:
        """Book the request with the routing state: cost and budget, auto-fallback windows, and the
        decision the feedback route will look up. The answer's cost gains CPU-ms and money."""
        cost = self._routing.settle(
            decision,
            tenant=request.tenant,
            request_id=request_id,
            usage=retrieved.usage if retrieved is not None else None,
            ok=status == "ok",
            timed_out=retrieved is not None and any(d.code.timed_out for d in retrieved.degraded),
            latency_s=latency_s,
            served_ids=[r.doc_id for r in retrieved.results] if retrieved is not None else [],
            query=request.query,
        )
        if retrieved is None or cost is None:
            return retrieved
        return replace(retrieved, cost=retrieved.cost.settled(cost, self._routing.prices.currency))

    # -- synthesize, shadow ----------------------------------------------------------------------------
    async def _synthesize(self, request: QueryRequest, r: Retrieval, retrieved: Retrieved) -> Synthesized:
        if not request.answer:
            return Synthesized(None, retrieved.cost)
        return await self._synthesis.synthesize(
            request.tenant, r.ns, request.query, retrieved.results, retrieved.cost, r.deadline, r.record
        )

    def _shadow(
        self,
        request: QueryRequest,
        pipeline: SearchPipeline,
        scope: AccessScope,
        decision: RoutingDecision,
        retrieved: Retrieved,
        request_id: str,
        took_ms: float,
    ) -> None:
        """A sampled computed, undegraded answer's candidate plan runs in the background."""
        if retrieved.usage is None or retrieved.degraded:
            return
        self._shadows.maybe_run(
            tenant=request.tenant,
            query=request.query,
            filters=request.filters,
            access=scope,  # the shadow may run on another index: it narrows the scope to its own
            top_k=request.top_k,
            pipeline=pipeline,
            decision=decision,
            request_id=request_id,
            baseline_ids=[r.doc_id for r in retrieved.results],
            baseline_ms=took_ms,
            baseline_usage=retrieved.usage,
        )

    async def purge_cache(self, tenant: str) -> None:
        """Forget ``tenant``'s cached answers (every replica, with Redis). Raises ``RedisUnavailable``
        when the purge could not reach Redis (this replica has forgotten them already)."""
        self._synthesis.purge(tenant)
        cache = self._lifecycle.cache
        if cache is not None:
            await cache.purge(tenant)


def _observe(plan: QueryPlan, degraded: tuple[Degradation, ...], took_ms: float) -> None:
    """The query's degradations (and dependency failures among them) and its latency, in metrics."""
    for d in degraded:
        metrics.DEGRADATIONS.labels(str(d.step), d.code.value).inc()
        if d.code.is_failure:
            metrics.ERRORS.labels(d.step.component, d.code.value).inc()
    metrics.QUERY_LATENCY.labels(plan.route).observe(took_ms / 1000.0)
