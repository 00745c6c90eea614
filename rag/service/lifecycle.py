"""Loading, readiness and shutdown of the service's dependencies.

:class:`Lifecycle` owns what a query needs and what takes time or I/O to build: the embedder, reranker
and vector store, the breaker board, the guarded Redis client and the shared breaker state, the query
cache (built once the embedder sets its dimension), the batched compute and the :class:`Runtime` of the
index version being served. Invariants: nothing heavy happens in ``__init__`` (bad configuration fails
there, loading happens in :meth:`Lifecycle.begin_loading`, in the background); ``phase`` is READY exactly
when a runtime is being served; a query reaches the runtime only through :meth:`Lifecycle.serving`,
which raises :class:`NotReady` otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from enum import StrEnum
from typing import Any

from rag import metrics
from rag.cache.keys import IndexIdentity
from rag.cache.semantic import QueryCache
from rag.candidates import candidate_settings
from rag.config import Settings
from rag.dense.embedder import Embedder
from rag.dense.store import VectorStore
from rag.errors import RagError
from rag.index.versions import VersionStore, version_number
from rag.rerank.cross_encoder import Reranker
from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import BreakerPolicy
from rag.resilience.deadline import StepCosts
from rag.resilience.redis import GuardedRedis
from rag.resilience.shared import SharedBreakerState
from rag.rollout.config import Profile
from rag.routing.vocabulary import vocabularies
from rag.runtime import Runtime, build_embedder, build_reranker, embedder_settings, open_store
from rag.service.batching import BatchedCompute
from rag.service.heap import freeze_long_lived
from rag.service.routing import QueryRouting
from rag.text.analyzer import Analyzer
from rag.types import Dependency

log = logging.getLogger(__name__)


class Phase(StrEnum):
    LOADING = "loading"  # models and index being loaded
    NO_INDEX = "no_index"  # models loaded, nothing published yet: ingest to become ready
    READY = "ready"
    FAILED = "failed"  # loading failed; see ``load_error``


class NotReady(RagError, RuntimeError):
    """The service cannot answer yet (loading, no index, or loading failed)."""


class Lifecycle:
    def __init__(
        self,
        settings: Settings,
        routing: QueryRouting,
        *,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        store: VectorStore | None = None,
        freeze_models: bool = False,
    ) -> None:
        """Cheap. ``embedder``, ``reranker`` and ``store`` replace the configured ones (tests);
        ``freeze_models``: once loaded, the models leave the cyclic GC's reach (:func:`freeze_long_lived`;
        a process-wide choice, so the process's owner makes it: ``rag serve``)."""
        self.settings = settings
        self._freeze_models = freeze_models
        self._routing = routing  # its profile limits and CPU cost model shape the batched compute
        self.embedder = embedder
        self.reranker = reranker
        self.store = store
        self.phase = Phase.LOADING
        self.load_error: str | None = None
        self.runtime: Runtime | None = None
        self.candidate: Runtime | None = None  # a staged candidate collection (rag.candidates), judged beside
        self._candidate_lock = threading.Lock()  # the follower's and an ingest job's opens, one at a time
        self._retired: list[tuple[float, Runtime]] = []  # candidates gone, closed once their queries are done
        self.compute: BatchedCompute | None = None
        self.breakers = BreakerBoard(breaker_policies(settings))
        self.costs = StepCosts()  # running step-cost estimates: whether a step fits the time left
        self.cache: QueryCache | None = None  # built once the embedder is loaded (it sets the dimension)
        self.redis: GuardedRedis | None = None
        self.shared_breakers: SharedBreakerState | None = None
        self._load_task: asyncio.Task[None] | None = None
        metrics.READY.set(0)

    # -- start ---------------------------------------------------------------------------------------
    def connect_redis(self) -> GuardedRedis | None:
        """The guarded Redis client (behind the ``redis`` breaker) and breaker-state sharing, when
        ``RAG_REDIS_URL`` is set; None otherwise."""
        settings = self.settings
        if settings.redis_url:
            timeout_s = settings.redis_timeout_ms / 1000
            self.redis = GuardedRedis.connect(
                settings.redis_url.get_secret_value(),
                self.breakers[Dependency.REDIS],
                timeout_s=timeout_s,
                collection=settings.collection,
            )
            replica = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}"  # as replica_name
            self.shared_breakers = SharedBreakerState(
                self.breakers, self.redis, replica, interval_s=settings.breaker_sync_ms / 1000
            )
            self.shared_breakers.start()
        return self.redis

    def begin_loading(self) -> None:
        """Load in the background; ``/health`` answers at once, ``/ready`` once loaded."""
        self._load_task = asyncio.create_task(self._load(), name="rag-load")

    async def wait_loaded(self) -> None:
        if self._load_task is not None:
            await asyncio.shield(self._load_task)

    async def _load(self) -> None:
        started = time.perf_counter()
        try:
            await asyncio.to_thread(self._load_models)
            assert self.embedder is not None
            if self._freeze_models:
                freeze_long_lived()  # before the index: a replaced version stays collectable
            if self.settings.cache_enabled:
                self.cache = build_cache(self.settings, self.embedder.dim, self.redis)
            self.compute = BatchedCompute(
                self.embedder,
                self.reranker,
                window_ms=self.settings.batch_window_ms,
                max_queries=self.settings.batch_max_queries,
                # a batch outlasting a quarter of the deadline leaves its members no time for the rest
                max_call_s=self.settings.deadline_ms / 1000 / 4,
                max_pairs=self.settings.batch_max_pairs,
                enabled=self.settings.micro_batching
                and self._routing.limits(Profile(self.settings.profile)).allows_batching,
                on_cpu=self._routing.cpu.observe,
                cpu_costs=self._routing.cpu,
                cpu_workers=self.settings.cpu_workers or max(os.cpu_count() or 2, 2),
            )
            await asyncio.to_thread(self.open_index)
        except Exception as exc:
            self.phase, self.load_error = Phase.FAILED, f"{type(exc).__name__}: {exc}"
            log.exception("loading failed")
            return
        log.info("loaded in %.1f s: %s", time.perf_counter() - started, self.phase.value)

    def _load_models(self) -> None:
        # the served version's model answers queries (RAG_EMBEDDER_MODEL is what the next ingest embeds with)
        self.embedder = self.embedder or build_embedder(embedder_settings(self.settings), serving=True)
        if self.reranker is None and self.settings.reranker_model:
            self.reranker = build_reranker(self.settings)
        self.store = self.store or open_store(self.settings)
        self.embedder.warm_up()
        if self.reranker is not None:
            self.reranker.warm_up()

    def open_index(self) -> None:
        """Open (or, after an ingest, switch to) the current published version."""
        if self.runtime is not None:
            if self.runtime.reload():
                metrics.INDEX_SWITCHES.inc()
        elif VersionStore(self.settings.versions_dir).current() is not None:
            runtime = Runtime.open(
                self.settings,
                load_reranker=False,  # _load_models built the configured one (or a test gave one)
                store=self.store,
                embedder=self.embedder,
                reranker=self.reranker,
                compute=self.compute,
            )
            runtime.snapshot.bm25  # noqa: B018 - build it now, not in the first query
            vocabularies(runtime.snapshot)  # the router's per-tenant IDF, likewise
            self.runtime = runtime
        if self.runtime is None:
            self.phase = Phase.NO_INDEX
            return
        if self.cache is not None:  # drop what the cache holds of the version no longer served
            self.cache.serve_index(IndexIdentity.of_snapshot(self.settings.collection, self.runtime.snapshot))
        self.phase = Phase.READY
        metrics.READY.set(1)
        metrics.INDEX_INFO.set(len(self.runtime.snapshot.chunks))
        metrics.INDEX_VERSION.set(version_number(self.runtime.snapshot.version))
        self.follow_candidate()

    def close_retired(self, now: float | None = None) -> None:
        """Close the candidates retired more than a deadline ago (each poll; cheap when there are none)."""
        if not self._retired:
            return
        now = time.monotonic() if now is None else now
        due = [runtime for at, runtime in self._retired if at <= now]
        self._retired = [(at, runtime) for at, runtime in self._retired if at > now]
        for runtime in due:
            runtime.close()

    def candidate_changed(self) -> bool:
        """Whether the staged candidate on disk is not the one open (one small file read)."""
        staged = VersionStore(candidate_settings(self.settings).versions_dir).current()
        return staged != (self.candidate.snapshot.version if self.candidate is not None else None)

    def follow_candidate(self) -> None:
        """Open, switch or close the staged candidate as its versions say (:mod:`rag.candidates`): shadow
        runs and the ``candidate_index`` flag's requests use it. A candidate that fails to open is logged
        and tried again at the next poll; the service is unaffected."""
        with self._candidate_lock:
            self._follow_candidate()

    def _follow_candidate(self) -> None:
        settings = candidate_settings(self.settings)
        staged = VersionStore(settings.versions_dir).current()
        candidate = self.candidate
        if staged is None or self.runtime is None:
            if candidate is not None:
                log.info("the staged candidate is gone (promoted or discarded): closing it")
                self.candidate = None
                # requests that took its pipeline finish first (within one deadline), then its store closes
                self._retired.append((time.monotonic() + self.settings.deadline_ms / 1000, candidate))
            return
        try:
            if candidate is None:
                self.candidate = Runtime.open_beside(settings, self.runtime)
                log.info("opened the staged candidate %s (%s)", staged, self.candidate.embedder.name)
            elif candidate.reload():
                log.info("the staged candidate switched to %s", staged)
        except Exception as exc:
            log.warning("the staged candidate %s could not be opened: %s", staged, exc)

    # -- stop ----------------------------------------------------------------------------------------
    def cancel_loading(self) -> None:
        if self._load_task is not None and not self._load_task.done():
            self._load_task.cancel()

    async def close(self) -> None:
        """Close the dependencies (after every user of them has stopped)."""
        if self.compute is not None:
            await self.compute.close()
        if self.shared_breakers is not None:
            await self.shared_breakers.close()
        if self.redis is not None:  # the client of the cache, the rate limiter and the shared breakers
            await self.redis.close()
        if self.candidate is not None:
            self.candidate.close()
        self.close_retired(now=float("inf"))
        if self.store is not None:
            self.store.close()
        metrics.READY.set(0)

    # -- readiness -----------------------------------------------------------------------------------
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
            "embedder": (runtime.embedder if runtime else self.embedder).name if self.embedder else None,
            "reranker": self.reranker.name if self.reranker else None,
            # a configured reranker this collection's answers are not reranked by (its domain record)
            "reranker_refused": runtime.rerank_refusal.reason if runtime and runtime.rerank_refusal else None,
        }

    def not_ready(self) -> NotReady:
        return NotReady(self.status()["reason"])

    def serving(self) -> Runtime:
        """The runtime of the version being served, or :class:`NotReady`."""
        if self.phase is not Phase.READY or self.runtime is None:
            raise self.not_ready()
        return self.runtime

    def index_summary(self) -> dict[str, Any]:
        runtime = self.serving()
        snapshot = runtime.snapshot
        per_tenant: dict[str, int] = {}
        for chunk in snapshot.first_chunks.values():
            per_tenant[chunk.tenant] = per_tenant.get(chunk.tenant, 0) + 1
        return {
            "index_version": snapshot.version,
            "documents": snapshot.n_docs,
            "chunks": len(snapshot.chunks),
            "documents_per_tenant": per_tenant,
            "created_at": snapshot.manifest.get("created_at"),
            "vector_store": runtime.vector_store_summary(),
            "candidate": _candidate_summary(self.candidate),
        }


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

    redis = Dependency.REDIS
    return {
        d.value: policy(settings.redis_timeout_ms / 1000 if d is redis else slow_s)
        for d in Dependency
        if d is not redis or settings.redis_url
    }


def build_cache(settings: Settings, dim: int, redis: GuardedRedis | None) -> QueryCache:
    return QueryCache(
        dim=dim,
        analyzer=Analyzer(),
        threshold=settings.cache_threshold,
        ttl_s=settings.cache_ttl_s,
        degraded_ttl_s=settings.cache_degraded_ttl_s,
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


def _candidate_summary(candidate: Runtime | None) -> dict[str, Any] | None:
    """What ``/admin/index`` shows of a staged candidate (None: none open)."""
    if candidate is None:
        return None
    return {
        "index_version": candidate.snapshot.version,
        "embedder": candidate.embedder.name,
        "chunks": len(candidate.snapshot.chunks),
        "created_at": candidate.snapshot.manifest.get("created_at"),
    }
