"""The retrieval service behind the HTTP API: loading, readiness, queries, ingestion, rate limits.

Everything here is transport-free (``api/`` translates HTTP to these calls and back). Loading the models
and the index happens in :meth:`RetrievalService.start`, in the background, never at import time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rag import metrics
from rag.config import Settings
from rag.dense.embedder import Embedder
from rag.dense.factory import build_embedder
from rag.dense.qdrant_store import QdrantStore, connect
from rag.index.ingest import Ingestor, IngestReport
from rag.index.versions import VersionStore
from rag.rerank.cross_encoder import Reranker
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import StepEvent, StepListener
from rag.retrieval.plan import PipelineName, Profile, plan_for
from rag.runtime import Runtime, build_reranker
from rag.service.auth import KeyRing
from rag.service.batching import BatchedCompute
from rag.service.jobs import IngestJobs, Job, ProgressFn
from rag.service.ratelimit import Decision, InProcessRateLimiter, RateLimiter, RedisRateLimiter
from rag.service.redis_client import connect_redis
from rag.tenancy import scoped_id
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


@dataclass(slots=True)
class QueryAnswer:
    results: list[Result]
    route: str
    plan: dict[str, Any]
    degraded: list[dict[str, str]]
    cache: str
    timings_ms: dict[str, float]
    cost: dict[str, float]
    index_version: str
    took_ms: float = 0.0


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
        self.keys = KeyRing.from_settings(settings.api_keys, settings.api_keys_file, settings.admin_token)
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
        metrics.READY.set(0)

    # -- lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Begin loading in the background; ``/health`` answers at once, ``/ready`` once loaded."""
        if self.settings.rate_limit_qps > 0:
            rate, burst = self.settings.rate_limit_qps, self.settings.rate_limit_burst
            if self.settings.redis_url:
                redis = connect_redis(
                    self.settings.redis_url, timeout_s=self.settings.redis_timeout_ms / 1000
                )
                self.limiter = RedisRateLimiter(redis, rate, burst)
            else:
                self.limiter = InProcessRateLimiter(rate, burst)
        self._load_task = asyncio.create_task(self._load(), name="rag-load")

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._load_models)
            assert self._embedder is not None
            self.compute = BatchedCompute(
                self._embedder,
                self._reranker,
                window_ms=self.settings.batch_window_ms,
                max_queries=self.settings.batch_max_queries,
                max_pairs=self.settings.batch_max_pairs,
                enabled=self.settings.micro_batching,
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
            self.runtime = runtime
        if self.runtime is None:
            self.phase = Phase.NO_INDEX
            return
        self.phase = Phase.READY
        metrics.READY.set(1)
        metrics.INDEX_INFO.set(len(self.runtime.snapshot.chunks))

    async def stop(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()
        if self.compute is not None:
            await self.compute.close()
        if self.limiter is not None:
            await self.limiter.close()
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
    async def rate_limit(self, tenant: str) -> Decision:
        if self.limiter is None:
            return Decision(True)
        decision = await self.limiter.acquire(tenant)
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(tenant).inc()
        return decision

    def check(self, request: QueryRequest) -> None:
        """Raise what :meth:`query` would raise before doing any work (NotReady, FilterError)."""
        SearchFilter.of(request.tenant, request.filters)
        self._runtime()

    async def query(self, request: QueryRequest, on_step: StepListener | None = None) -> QueryAnswer:
        """Answer one query for its tenant. Raises :class:`NotReady`, ``FilterError`` (bad filters) or
        ``StepFailed``; cancelling the call stops the pipeline at its next step."""
        started = time.perf_counter()
        flt = SearchFilter.of(request.tenant, request.filters)  # validate before any work
        runtime = self._runtime()
        pipeline = runtime.pipeline  # one version for the whole request, even if an ingest lands now
        steps: list[StepEvent] = []

        def record(event: StepEvent) -> None:
            steps.append(event)
            metrics.STEP_LATENCY.labels(event.step).observe(event.ms / 1000.0)
            if on_step is not None:
                on_step(event)

        t0 = time.perf_counter()
        plan = plan_for(
            PipelineName.AUTO,
            self.settings,
            top_k=request.top_k,
            reranker_available=pipeline.reranker is not None,
            profile=request.profile,
        )
        profile = request.profile or Profile(self.settings.profile)
        record(
            StepEvent("plan", (time.perf_counter() - t0) * 1000.0, {"route": plan.route, "profile": profile})
        )
        metrics.INFLIGHT.inc()
        status = "error"
        try:
            outcome = await pipeline.run(request.query, plan, flt, record)
            status = "degraded" if outcome.degraded else "ok"
        except asyncio.CancelledError:
            status = "cancelled"  # the client went away
            raise
        finally:
            metrics.INFLIGHT.dec()
            metrics.QUERIES.labels(request.tenant, plan.route, status).inc()
        for d in outcome.degraded:
            metrics.DEGRADATIONS.labels(d.step, d.reason).inc()
        metrics.RERANK_PAIRS.labels(request.tenant).inc(outcome.rerank_pairs)
        took = (time.perf_counter() - started) * 1000.0
        metrics.QUERY_LATENCY.labels(plan.route).observe(took / 1000.0)
        timings = {e.step: round(e.ms, 3) for e in steps}
        return QueryAnswer(
            results=pipeline.results(outcome.hits, request.top_k),
            route=plan.route,
            plan={**plan.as_dict(), "profile": profile.value},
            degraded=[{"step": d.step, "reason": d.reason} for d in outcome.degraded],
            cache="off",  # the semantic cache lands with its own issue; until then every answer is computed
            timings_ms=timings,
            cost={
                "embedded_texts": outcome.embedded_texts,
                "rerank_pairs": outcome.rerank_pairs,
                "candidates": plan.candidates * len(plan.retrievers),
            },
            index_version=pipeline.snapshot.version,
            took_ms=round(took, 3),
        )

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
            report = ingestor.ingest(documents, scoped_deletes)
            self._open_index()  # switch queries to the new version (or become ready on the first one)
            return report

        job, future = self.jobs.submit(tenant, len(documents), len(delete_ids), work)
        future.add_done_callback(lambda f: metrics.INGEST_JOBS.labels(f.result().state.value).inc())
        return job, future
