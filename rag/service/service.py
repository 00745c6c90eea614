"""The retrieval service behind the HTTP API: loading, readiness, queries, ingestion, rate limits.

Everything here is transport-free (``api/`` translates HTTP to these calls and back). Loading the models
and the index happens in :meth:`RetrievalService.start`, in the background, never at import time.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import asdict, dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np

from rag import metrics
from rag.cache.answers import AnswerCache
from rag.cache.keys import Namespace
from rag.cache.semantic import CacheHit, QueryCache
from rag.cache.singleflight import SingleFlight
from rag.config import Settings
from rag.dense.embedder import Embedder
from rag.dense.factory import build_embedder
from rag.dense.qdrant_store import QdrantStore, connect
from rag.index.ingest import Ingestor, IngestReport
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.llm import ChatClient, Synthesis, Synthesizer, request_tokens, with_usage
from rag.logs import request_id_var
from rag.rerank.cross_encoder import Reranker
from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import BreakerPolicy
from rag.resilience.deadline import Deadline, StepCosts
from rag.resilience.guarded_redis import GuardedRedis, RedisUnavailable, one_attempt
from rag.resilience.shared import SharedBreakerState
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import (
    Degradation,
    Guards,
    RetrievalUnavailable,
    SearchPipeline,
    StepEvent,
    StepListener,
    failure_degradation,
)
from rag.retrieval.plan import Profile, QueryPlan
from rag.routing.costs import Usage, budget_refusal, cost_step, llm_money, usage_of
from rag.routing.vocabulary import tenant_idf, vocabularies
from rag.runtime import Runtime, build_reranker
from rag.service.auth import KeyRing
from rag.service.batching import BatchedCompute
from rag.service.jobs import IngestJobs, Job, ProgressFn
from rag.service.ratelimit import Decision, InProcessRateLimiter, RateLimiter, RedisRateLimiter
from rag.service.redis_client import connect_redis
from rag.service.routing import QueryRouting, RoutingDecision
from rag.service.shadow import ShadowRunner
from rag.tenancy import scoped_id
from rag.text.analyzer import Analyzer
from rag.types import Document, Result

log = logging.getLogger(__name__)


class Phase(StrEnum):
    LOADING = "loading"  # models and index being loaded
    NO_INDEX = "no_index"  # models loaded, nothing published yet: ingest to become ready
    READY = "ready"
    FAILED = "failed"  # loading failed; see ``load_error``


class NotReady(RuntimeError):
    """The service cannot answer yet (loading, no index, or loading failed)."""


@dataclass(frozen=True, slots=True)
class QueryRequest:
    tenant: str
    query: str
    top_k: int = 10
    filters: dict[str, Any] | None = None
    profile: Profile | None = None
    answer: bool = False  # synthesise an answer through the LLM, when one is configured
    session_id: str | None = None  # the unit of per-session flags (A/B by session)


@dataclass(slots=True)
class QueryAnswer:
    results: list[Result]
    route: str
    plan: dict[str, Any]
    degraded: list[dict[str, str]]
    cache: str
    timings_ms: dict[str, float]
    cost: dict[str, Any]
    index_version: str
    took_ms: float = 0.0
    answer: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Query:
    """One query in flight: what the cache and the pipeline steps of :meth:`RetrievalService.query` need."""

    request: QueryRequest
    pipeline: SearchPipeline
    plan: QueryPlan
    flt: SearchFilter
    ns: Namespace
    deadline: Deadline
    record: StepListener
    decision: RoutingDecision


@dataclass(slots=True)
class Computed:
    """The retrieval part of an answer: what the cache keeps and what single-flight shares."""

    results: list[Result]
    route: str
    plan: dict[str, Any]
    degraded: list[Degradation]
    cache: str
    cost: dict[str, Any]
    index_version: str
    usage: Usage | None = None  # the work done (None: answered from the cache)

    def cacheable(self) -> dict[str, Any]:
        return {
            "results": [asdict(r) for r in self.results],
            "route": self.route,
            "plan": self.plan,
            "index_version": self.index_version,
        }

    @classmethod
    def from_cache(cls, hit: CacheHit, degraded: list[Degradation]) -> Computed:
        a = hit.answer
        return cls(
            results=[Result(**r) for r in a["results"]],
            route=a["route"],
            plan=a["plan"],
            degraded=degraded,
            cache=hit.level,
            cost={"embedded_texts": 1 if hit.level == "l2" else 0, "rerank_pairs": 0, "candidates": 0},
            index_version=a["index_version"],
        )


class RetrievalService:
    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        store: QdrantStore | None = None,
    ) -> None:
        """Cheap: parses configuration only (bad keys fail here, at startup). ``embedder``, ``reranker``
        and ``store`` replace the configured ones (tests)."""
        self.settings = settings
        self.keys = KeyRing.from_settings(
            settings.api_keys, settings.api_keys_file, settings.admin_token, pepper=settings.key_pepper
        )
        self._embedder = embedder
        self._reranker = reranker
        self._store = store
        self.phase = Phase.LOADING
        self.load_error: str | None = None
        self.runtime: Runtime | None = None
        self.compute: BatchedCompute | None = None
        self.jobs = IngestJobs()
        self.limiter: RateLimiter | None = None
        self._load_task: asyncio.Task[None] | None = None
        self.breakers = BreakerBoard(breaker_policies(settings))
        self.costs = StepCosts()
        self.flights: SingleFlight[Computed] = SingleFlight()
        self.cache: QueryCache | None = None  # built once the embedder is loaded (it sets the dimension)
        self.redis: GuardedRedis | None = None
        self.shared_breakers: SharedBreakerState | None = None
        self.routing = QueryRouting(  # a bad rollout config file fails here, at startup
            settings,
            reranker_available=reranker is not None or settings.reranker_model is not None,
            decision_log=settings.bandit_log,
        )
        self.shadows = ShadowRunner(self.routing, self.costs, deadline_ms=settings.deadline_ms)
        self.llm: Synthesizer | None = (
            ChatClient(
                settings.llm_url,
                settings.llm_model,
                api_key=settings.llm_api_key,
                max_tokens=settings.llm_max_tokens,
                max_passages=settings.llm_passages,
            )
            if settings.llm_url
            else None
        )
        # synthesized answers, reused for the same normalised text only (L1), bounded like the L1
        self.answers = (
            AnswerCache(
                settings.cache_l1_entries,
                settings.cache_ttl_s,
                max_bytes=max(settings.cache_l1_max_bytes // ANSWER_SHARE_OF_L1, 1),
            )
            if settings.cache_enabled
            else None
        )
        metrics.READY.set(0)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin loading in the background; ``/health`` answers at once, ``/ready`` once loaded."""
        settings = self.settings
        if settings.redis_url:
            timeout_s = settings.redis_timeout_ms / 1000
            client = connect_redis(settings.redis_url.get_secret_value(), timeout_s=timeout_s)
            self.redis = GuardedRedis(client, self.breakers["redis"], timeout_s=timeout_s)
            replica = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"
            self.shared_breakers = SharedBreakerState(
                self.breakers, self.redis, replica, interval_s=settings.breaker_sync_ms / 1000
            )
            self.shared_breakers.start()
        await self.routing.start(self.redis, settings.data_dir / "bandit" / f"{settings.collection}.json")
        if settings.rate_limit_qps > 0:
            rate, burst = settings.rate_limit_qps, settings.rate_limit_burst
            self.limiter = (
                RedisRateLimiter(self.redis, rate, burst)
                if self.redis is not None
                else InProcessRateLimiter(rate, burst)
            )
        self._load_task = asyncio.create_task(self._load(), name="rag-load")

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._load_models)
            assert self._embedder is not None
            if self.settings.cache_enabled:
                self.cache = build_cache(self.settings, self._embedder.dim, self.redis)
            self.compute = BatchedCompute(
                self._embedder,
                self._reranker,
                window_ms=self.settings.batch_window_ms,
                max_queries=self.settings.batch_max_queries,
                max_pairs=self.settings.batch_max_pairs,
                enabled=self.settings.micro_batching
                and self.routing.limits(Profile(self.settings.profile)).batching,
                on_cpu=self.routing.cpu.observe,
            )
            await asyncio.to_thread(self._open_index)
        except Exception as exc:
            self.phase, self.load_error = Phase.FAILED, f"{type(exc).__name__}: {exc}"
            log.exception("loading failed")
            return
        log.info("loaded in %.1f s: %s", time.perf_counter() - started, self.phase.value)

    def _load_models(self) -> None:
        self._embedder = self._embedder or build_embedder(self.settings)
        if self._reranker is None and self.settings.reranker_model:
            self._reranker = build_reranker(self.settings)
        self._store = self._store or QdrantStore(connect(self.settings), self.settings.collection)
        self._embedder.warm_up()
        if self._reranker is not None:
            self._reranker.warm_up()

    def _open_index(self) -> None:
        """Open (or, after an ingest, switch to) the current published version."""
        if self.runtime is not None:
            self.runtime.reload()
        elif VersionStore(self.settings.versions_dir).current() is not None:
            runtime = Runtime.open(
                self.settings,
                load_reranker=False,  # _load_models built the configured one (or a test gave one)
                store=self._store,
                embedder=self._embedder,
                reranker=self._reranker,
                compute=self.compute,
            )
            runtime.snapshot.bm25  # noqa: B018 - build it now, not in the first query
            vocabularies(runtime.snapshot)  # the router's per-tenant IDF, likewise
            self.runtime = runtime
        if self.runtime is None:
            self.phase = Phase.NO_INDEX
            return
        if self.cache is not None:  # drop what the cache holds of the version no longer served
            self.cache.serve_version(self.runtime.snapshot.version)
        self.phase = Phase.READY
        metrics.READY.set(1)
        metrics.INDEX_INFO.set(len(self.runtime.snapshot.chunks))

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        self.shadows.cancel_all()
        await self.routing.close()
        if self.compute is not None:
            await self.compute.close()
        if self.shared_breakers is not None:
            await self.shared_breakers.close()
        if self.redis is not None:  # the client of the cache, the rate limiter and the shared breakers
            await self.redis.close()
        if self.llm is not None:
            await self.llm.close()
        self.jobs.close()
        if self._store is not None:
            self._store.close()
        metrics.READY.set(0)

    # -- status ------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        runtime = self.runtime
        reasons = {
            Phase.LOADING: "loading the models and the index",
            Phase.NO_INDEX: "no index published yet; ingest documents through the admin API",
            Phase.FAILED: f"loading failed: {self.load_error}",
            Phase.READY: None,
        }
        return {
            "ready": self.phase is Phase.READY,
            "phase": self.phase.value,
            "reason": reasons[self.phase],
            "index_version": runtime.snapshot.version if runtime else None,
            "embedder": self._embedder.name if self._embedder else None,
            "reranker": self._reranker.name if self._reranker else None,
        }

    def _runtime(self) -> Runtime:
        if self.phase is not Phase.READY or self.runtime is None:
            raise NotReady(self.status()["reason"])
        return self.runtime

    def index_summary(self) -> dict[str, Any]:
        snapshot = self._runtime().snapshot
        per_tenant: dict[str, int] = {}
        for chunk in snapshot.first_chunks.values():
            per_tenant[chunk.tenant] = per_tenant.get(chunk.tenant, 0) + 1
        return {
            "index_version": snapshot.version,
            "documents": snapshot.n_docs,
            "chunks": len(snapshot.chunks),
            "documents_per_tenant": per_tenant,
            "created_at": snapshot.manifest.get("created_at"),
        }

    # -- queries -----------------------------------------------------------------------------------
    async def rate_limit(self, tenant: str, bucket: str | None = None) -> Decision:
        """Take a token of ``tenant``'s queries, or of its ``bucket`` (e.g. "feedback": same rate and
        burst, counted apart; ``tenant:bucket`` cannot be a tenant name, so buckets never collide)."""
        if self.limiter is None:
            return Decision(True)
        decision = await self.limiter.acquire(tenant if bucket is None else f"{tenant}:{bucket}")
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(tenant).inc()
        return decision

    def check(self, request: QueryRequest) -> None:
        """Raise what :meth:`query` would raise before doing any work (NotReady, FilterError)."""
        SearchFilter.of(request.tenant, request.filters)
        self._runtime()

    async def query(self, request: QueryRequest, on_step: StepListener | None = None) -> QueryAnswer:
        """Answer one query for its tenant within the deadline: L1, then (with the query embedded once)
        L2, then the pipeline under guards; identical concurrent misses run once. Raises
        :class:`NotReady`, ``FilterError`` (bad filters) or :class:`RetrievalUnavailable` (no retriever
        and no cached answer); cancelling the call stops the pipeline at its next step."""
        started = time.perf_counter()
        flt = SearchFilter.of(request.tenant, request.filters)  # validate before any work
        runtime = self._runtime()
        pipeline = runtime.pipeline  # one version for the whole request, even if an ingest lands now
        deadline = Deadline.after_ms(self.settings.deadline_ms)
        steps: list[StepEvent] = []

        def record(event: StepEvent) -> None:
            steps.append(event)
            metrics.STEP_LATENCY.labels(event.step).observe(event.ms / 1000.0)
            if on_step is not None:
                on_step(event)

        t0 = time.perf_counter()
        profile = request.profile or Profile(self.settings.profile)
        version = pipeline.snapshot.version
        idf = tenant_idf(pipeline.snapshot, request.tenant)  # never another tenant's vocabulary
        features = None
        if len(request.query) > ANALYZE_OFF_LOOP_CHARS and self.routing.needs_analysis(
            request.tenant, request.query, version
        ):  # analysis is linear in the query's length: a long one is analysed off the event loop
            features = await asyncio.to_thread(self.routing.analyze, request.query, idf)
        decision = self.routing.decide(  # raises OverBudgetError (a tenant refused past its budget)
            request.tenant,
            request.query,
            idf=idf,
            profile=profile,
            top_k=request.top_k,
            session_id=request.session_id,
            version=version,
            features=features,
        )
        plan = decision.plan
        routed = decision.routed
        record(
            StepEvent(
                "plan",
                (time.perf_counter() - t0) * 1000.0,
                {"route": plan.route, "profile": profile, "arm": routed.arm.value, "policy": routed.policy},
            )
        )
        ns = Namespace.of(
            request.tenant,
            pipeline.snapshot.version,
            pipeline.embedder.name if pipeline.embedder is not None else "-",
            {"plan": plan.as_dict(), "filters": request.filters or {}},
        )
        request_id = request_id_var.get() or ""
        metrics.INFLIGHT.inc()
        status = "error"
        computed: Computed | None = None
        try:
            with one_attempt():  # Redis failing once costs this request one timeout, not one per call
                computed = await self._cached_or_computed(
                    _Query(request, pipeline, plan, flt, ns, deadline, record, decision)
                )
            status = "degraded" if computed.degraded else "ok"
        except asyncio.CancelledError:
            status = "cancelled"  # the client went away
            raise
        finally:
            metrics.INFLIGHT.dec()
            cache_result = computed.cache if computed is not None else "none"
            metrics.QUERIES.labels(request.tenant, plan.route, status, cache_result).inc()
            if status != "cancelled":
                self._settle(request, decision, computed, request_id, status, time.perf_counter() - started)
        assert computed is not None
        degraded = list(computed.degraded)
        synthesis = None
        if request.answer:
            synthesis = await self._synthesize(request, ns, computed, deadline, degraded, record)
        for d in degraded:
            metrics.DEGRADATIONS.labels(d.step, d.code).inc()
            if d.code in FAILURE_CODES:
                metrics.ERRORS.labels(component_of(d.step), d.code).inc()
        took = (time.perf_counter() - started) * 1000.0
        metrics.QUERY_LATENCY.labels(plan.route).observe(took / 1000.0)
        if computed.usage is not None and status == "ok":
            self.shadows.maybe_run(
                tenant=request.tenant,
                query=request.query,
                filters=request.filters,
                top_k=request.top_k,
                pipeline=pipeline,
                decision=decision,
                request_id=request_id,
                baseline_ids=[r.doc_id for r in computed.results],
                baseline_ms=took,
                baseline_usage=computed.usage,
            )
        return QueryAnswer(
            results=computed.results,
            route=computed.route,
            plan={**computed.plan, **decision.plan_dict()},
            degraded=[{"step": d.step, "code": d.code, "reason": d.reason} for d in degraded],
            cache=computed.cache,
            timings_ms={e.step: round(e.ms, 3) for e in steps},
            cost=computed.cost,
            index_version=computed.index_version,
            took_ms=round(took, 3),
            answer=synthesis,
        )

    def _settle(
        self,
        request: QueryRequest,
        decision: RoutingDecision,
        computed: Computed | None,
        request_id: str,
        status: str,
        latency_s: float,
    ) -> None:
        """Book the request with the routing state: cost and budget, auto-fallback windows, and the
        decision the feedback route will look up. The answer's ``cost`` gains CPU-ms and money."""
        timed_out = computed is not None and any(d.code in ("timeout", "deadline") for d in computed.degraded)
        cost = self.routing.settle(
            decision,
            tenant=request.tenant,
            request_id=request_id,
            usage=computed.usage if computed is not None else None,
            ok=status == "ok",
            timed_out=timed_out,
            latency_s=latency_s,
            served_ids=[r.doc_id for r in computed.results] if computed is not None else [],
        )
        if computed is not None and cost is not None:
            computed.cost = {
                **computed.cost,
                "cpu_ms": round(cost.cpu_ms_total, 3),
                "money": round(cost.money_total, 8),
                "currency": self.routing.prices.currency,
            }

    async def _cached_or_computed(self, q: _Query) -> Computed:
        cache = self.cache
        if cache is None:
            return await self._compute(q)
        degraded: list[Degradation] = []
        t0 = time.perf_counter()
        try:
            hit = await cache.get_exact(q.ns, q.request.query)
        except RedisUnavailable as exc:
            hit = None
            degraded.append(Degradation("cache", "redis_unavailable", str(exc)))
        metrics.CACHE_LOOKUPS.labels("l1", "hit" if hit else "miss").inc()
        q.record(StepEvent("cache.l1", (time.perf_counter() - t0) * 1000.0, {"hit": hit is not None}))
        if hit is not None:
            return Computed.from_cache(hit, degraded)
        # the namespace digest holds the tenant: the exact key alone identifies the flight
        computed, shared = await self.flights.do(q.ns.exact_key(q.request.query), lambda: self._compute(q))
        if shared:
            metrics.CACHE_COALESCED.inc()
            computed = replace(computed, cache="coalesced")
        return replace(computed, degraded=degraded + computed.degraded)

    async def _compute(self, q: _Query) -> Computed:
        """L2 (after embedding the query once), else the pipeline; a full answer is cached."""
        request, pipeline, plan, ns, record = q.request, q.pipeline, q.plan, q.ns, q.record
        guards = Guards(q.deadline, self.breakers, self.costs, cpu=self.routing.cpu.observe)
        run = pipeline.prepare(request.query, plan, q.flt, record, guards)
        cache, snapshot = self.cache, pipeline.snapshot
        vector = await run.embed() if cache is not None else None
        degraded: list[Degradation] = []
        if cache is not None and vector is not None:
            t0 = time.perf_counter()
            try:
                hit = await cache.get_similar(ns, request.query, vector, snapshot.idf)
                metrics.CACHE_LOOKUPS.labels("l2", "hit" if hit else "miss").inc()
            except RedisUnavailable as exc:
                hit = None
                metrics.CACHE_LOOKUPS.labels("l2", "error").inc()
                degraded.append(Degradation("cache", "redis_unavailable", str(exc)))
            detail = {"hit": hit is not None, **({"similarity": round(hit.similarity, 4)} if hit else {})}
            record(StepEvent("cache.l2", (time.perf_counter() - t0) * 1000.0, detail))
            if hit is not None:
                return Computed.from_cache(hit, run.outcome.degraded + degraded)
        try:
            outcome = await run.execute()
        except RetrievalUnavailable as exc:
            # the last rung: nothing could retrieve; a cached answer of a near-enough query may still do
            fallback = await self._cache_only(ns, request.query, vector, snapshot)
            if fallback is None:
                raise
            why = Degradation("retrieve", "cache_only", f"no retriever available ({exc}); served from cache")
            return Computed.from_cache(fallback, exc.degraded + degraded + [why])
        metrics.RERANK_PAIRS.labels(request.tenant).inc(outcome.rerank_pairs)
        computed = Computed(
            results=pipeline.results(outcome.hits, request.top_k),
            route=plan.route,
            plan=plan.as_dict(),
            degraded=outcome.degraded + degraded,
            cache="miss" if cache is not None else "off",
            cost={
                "embedded_texts": outcome.embedded_texts,
                "rerank_pairs": outcome.rerank_pairs,
                "candidates": plan.candidates * len(plan.retrievers),
            },
            index_version=snapshot.version,
            usage=usage_of(outcome),
        )
        if cache is not None and not outcome.degraded:  # a degraded answer is never cached
            try:
                await cache.put(ns, request.query, vector, computed.cacheable())
            except RedisUnavailable as exc:
                computed.degraded.append(Degradation("cache", "redis_unavailable", str(exc)))
        return computed

    async def _cache_only(
        self, ns: Namespace, query: str, vector: np.ndarray | None, snapshot: IndexSnapshot
    ) -> CacheHit | None:
        if self.cache is None or vector is None:
            return None
        try:
            return await self.cache.get_similar(ns, query, vector, snapshot.idf)
        except RedisUnavailable:
            return None

    async def _synthesize(
        self,
        request: QueryRequest,
        ns: Namespace,
        computed: Computed,
        deadline: Deadline,
        degraded: list[Degradation],
        record: StepListener,
    ) -> dict[str, Any] | None:
        """The optional LLM answer. Reused when this normalised text was answered from these passages
        before (L1 semantics: a semantic neighbour's answer is never reused, its passages are
        synthesized afresh). Otherwise priced first — refused, with a ``budget`` degradation, when it
        could take the tenant past its budget — then asked within the deadline and booked: its tokens
        in ``computed.cost`` and its money against the tenant's budget. On any failure or refusal the
        passages stand alone."""
        computed.cost = {**computed.cost, "prompt_tokens": 0, "completion_tokens": 0, "llm_money": 0.0}
        if self.llm is None:
            degraded.append(Degradation("synthesize", "not_configured", "no LLM configured (RAG_LLM_URL)"))
            return None
        llm, query, results = self.llm, request.query, computed.results
        key = AnswerCache.key(ns, query, llm.model, results) if self.answers is not None else None
        reused = self.answers.get(key) if self.answers is not None and key is not None else None
        if reused is not None:
            metrics.LLM_REQUESTS.labels("reused").inc()
            record(StepEvent("synthesize", 0.0, {"model": reused.model, "reused": True}))
            return _answer_of(reused, reused=True)
        prompt, completion = request_tokens(
            query, results, max_passages=llm.max_passages, max_tokens=llm.max_tokens
        )
        refusal = budget_refusal(
            self.routing.budgets.state(request.tenant), llm_money(prompt, completion, self.routing.prices)
        )
        if refusal is not None:
            metrics.LLM_REQUESTS.labels("budget").inc()
            metrics.BUDGET_EXCEEDED.labels(request.tenant, "no_synthesis").inc()
            degraded.append(Degradation("synthesize", "budget", f"no answer synthesized: tenant {refusal}"))
            return None
        timeout = min(self.settings.llm_timeout_ms / 1000.0, deadline.timeout_s(reserve_s=0.005))
        t0 = time.perf_counter()
        try:
            out = await self.breakers["llm"].call(lambda: llm.synthesize(query, results), timeout_s=timeout)
        except Exception as exc:  # unbooked: an endpoint that failed reported no usage
            failure = failure_degradation("synthesize", exc, timeout)
            metrics.LLM_REQUESTS.labels(failure.code).inc()
            degraded.append(failure)
            return None
        metrics.LLM_REQUESTS.labels("ok").inc()
        record(StepEvent("synthesize", (time.perf_counter() - t0) * 1000.0, {"model": out.model}))
        out = with_usage(out, query, results, llm.max_passages)
        usage = Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens)
        money = self.routing.book(request.tenant, usage).money_total
        computed.cost = {
            **computed.cost,
            "prompt_tokens": out.prompt_tokens,
            "completion_tokens": out.completion_tokens,
            "llm_money": round(money, 8),
            "money": round((computed.cost.get("money") or 0.0) + money, 8),
            "currency": self.routing.prices.currency,
        }
        if self.answers is not None and key is not None:
            self.answers.put(key, out)
        return _answer_of(out, reused=False)

    async def feedback(
        self,
        tenant: str,
        request_id: str,
        *,
        rating: float | None = None,
        clicked: Sequence[str] | None = None,
        relevance: dict[str, float] | None = None,
    ) -> dict[str, Any] | None:
        """Feedback on an answered request (see :meth:`QueryRouting.feedback`)."""
        return await self.routing.feedback(
            tenant, request_id, rating=rating, clicked=clicked, relevance=relevance
        )

    async def purge_cache(self, tenant: str) -> None:
        """Forget ``tenant``'s cached answers (every replica, with Redis). Raises ``RedisUnavailable``
        when the purge could not reach Redis (this replica has forgotten them already)."""
        if self.answers is not None:
            self.answers.purge(tenant)
        if self.cache is not None:
            await self.cache.purge(tenant)

    # -- ingestion ---------------------------------------------------------------------------------
    def can_ingest(self) -> None:
        if self.phase in (Phase.LOADING, Phase.FAILED) or self._embedder is None or self._store is None:
            raise NotReady(self.status()["reason"])

    def submit_ingest(
        self, tenant: str, documents: Sequence[Document], delete_ids: Sequence[str]
    ) -> tuple[Job, Future[Job]]:
        """Queue an ingest of ``documents`` and deletes of ``delete_ids`` (plain ids of ``tenant``)."""
        self.can_ingest()
        assert self._embedder is not None and self._store is not None
        embedder, store = self._embedder, self._store
        scoped_deletes = [scoped_id(tenant, d) for d in delete_ids]

        def work(progress: ProgressFn) -> IngestReport:
            ingestor = Ingestor(self.settings, embedder, store, progress=False, on_progress=progress)
            return ingestor.ingest(documents, scoped_deletes)

        # then switch queries to the new version (or become ready on the first one); if that raises, the
        # job ends reload_failed (the version is published) rather than failed
        job, future = self.jobs.submit(tenant, len(documents), len(delete_ids), work, switch=self._open_index)
        future.add_done_callback(lambda f: metrics.INGEST_JOBS.labels(f.result().state.value).inc())
        return job, future


ANSWER_SHARE_OF_L1 = 4  # synthesized answers may hold a quarter of the L1's byte bound


def _answer_of(out: Synthesis, *, reused: bool) -> dict[str, Any]:
    return {
        "text": out.text,
        "model": out.model,
        "prompt_tokens": out.prompt_tokens,
        "completion_tokens": out.completion_tokens,
        "reused": reused,
    }


# Query analysis costs ~70 µs for a typical query and grows linearly to ~1-2 ms at the 2,048-character
# limit; past this length a worker-thread hand-off (~50-100 µs) is the smaller cost to the event loop.
ANALYZE_OFF_LOOP_CHARS = 256
FAILURE_CODES = frozenset({"error", "timeout", "breaker_open", "redis_unavailable"})
_COMPONENTS = {"embed": "embedder", "retrieve.dense": "qdrant", "rerank": "reranker", "cache": "redis"}


def component_of(step: str) -> str:
    """The dependency behind a pipeline step (``embed.q1`` → embedder), for ``rag_errors_total``."""
    base = cost_step(step)
    return _COMPONENTS.get(base, "llm" if base == "synthesize" else base)


def breaker_policies(settings: Settings) -> dict[str, BreakerPolicy]:
    """One policy per dependency from the ``RAG_BREAKER_*`` settings; Redis calls are slow past their
    own timeout, the others past ``RAG_BREAKER_SLOW_CALL_MS`` (default: the deadline)."""
    slow_s = (settings.breaker_slow_call_ms or settings.deadline_ms) / 1000

    def policy(slow_call_s: float) -> BreakerPolicy:
        return BreakerPolicy(
            failure_rate=settings.breaker_failure_rate,
            slow_rate=settings.breaker_slow_rate,
            slow_call_s=slow_call_s,
            window_calls=max(settings.breaker_window_calls, settings.breaker_min_calls),
            window_s=settings.breaker_window_s,
            min_calls=settings.breaker_min_calls,
            open_s=settings.breaker_open_s,
        )

    names = ["embedder", "qdrant", "reranker", "llm"] + (["redis"] if settings.redis_url else [])
    return {name: policy(settings.redis_timeout_ms / 1000 if name == "redis" else slow_s) for name in names}


def build_cache(settings: Settings, dim: int, redis: GuardedRedis | None) -> QueryCache:
    return QueryCache(
        dim=dim,
        analyzer=Analyzer(),
        threshold=settings.cache_threshold,
        ttl_s=settings.cache_ttl_s,
        l1_entries=settings.cache_l1_entries,
        l1_max_bytes=settings.cache_l1_max_bytes,
        l2_entries=settings.cache_l2_entries,
        l2_max_entries=settings.cache_l2_max_entries,
        l2_max_bytes=settings.cache_l2_max_bytes,
        tenant_share=settings.cache_tenant_share,
        max_spaces=settings.cache_max_spaces,
        max_tenants=settings.cache_max_tenants,
        rare_idf=settings.cache_rare_idf,
        redis=redis,
        secret=settings.cache_secret.get_secret_value().encode() if settings.cache_secret else None,
        sync_interval_s=settings.cache_sync_ms / 1000,
    )
