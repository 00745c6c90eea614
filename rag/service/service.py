"""The retrieval service behind the HTTP API: the composition root that builds its parts and wires them.

Everything under ``rag.service`` is transport-free (``api/`` translates HTTP to these calls and back,
through ``api.deps``, the one place that knows which part serves which route). The parts, each owning
its own state:

- :class:`~rag.service.lifecycle.Lifecycle`: loading, readiness, shutdown; the dependencies (models,
  store, breakers, Redis, cache, the runtime of the version served);
- :class:`~rag.service.routing.QueryRouting`: the routing parts (planner, cost ledger, feedback learner,
  rollout administration) over one serving routing policy;
- :class:`~rag.service.queries.QueryHandler`: one query, request to answer, over
  :class:`~rag.service.cached_retrieval.CachedRetrieval` and
  :class:`~rag.service.synthesis.AnswerSynthesis`;
- :class:`~rag.service.jobs.Ingestion`: ingest jobs and the switch to the version they publish, and how
  far a version has reached across the replicas;
- :class:`~rag.service.version_follower.VersionFollower`: this process on the newest published version
  (another process's publish), and its replica lease;
- :class:`~rag.service.limits.RateLimits`: per-tenant rate limits;
- :class:`~rag.service.auth.KeyRing`: who a bearer token is.

Nothing heavy happens at construction (bad configuration fails there); :meth:`RetrievalService.start`
connects Redis and loads in the background.
"""

from __future__ import annotations

from rag.config import Settings
from rag.dense.embedder import Embedder
from rag.dense.store import VectorStore
from rag.io.feedback_log import FeedbackLog, log_root
from rag.rerank.cross_encoder import Reranker
from rag.service.auth import KeyRing
from rag.service.cached_retrieval import CachedRetrieval
from rag.service.jobs import Ingestion
from rag.service.lifecycle import Lifecycle
from rag.service.limits import RateLimits
from rag.service.queries import QueryHandler
from rag.service.routing import QueryRouting
from rag.service.shadow import ShadowRunner
from rag.service.synthesis import AnswerSynthesis
from rag.service.version_follower import VersionFollower, replica_name


class RetrievalService:
    def __init__(
        self,
        settings: Settings,
        *,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        store: VectorStore | None = None,
        freeze_models: bool = False,
    ) -> None:
        """Cheap: parses configuration only (bad keys or a bad rollout config fail here, at startup).
        ``embedder``, ``reranker`` and ``store`` replace the configured ones (tests); ``freeze_models``:
        see :class:`Lifecycle`."""
        self.settings = settings
        self.keys = KeyRing.from_settings(
            settings.api_keys, settings.api_keys_file, settings.admin_token, pepper=settings.key_pepper
        )
        self.routing = QueryRouting(
            settings,
            reranker_available=reranker is not None or settings.reranker_model is not None,
            decision_log=settings.bandit_log,
            feedback_log=feedback_log(settings),
        )
        self.lifecycle = Lifecycle(
            settings,
            self.routing,
            embedder=embedder,
            reranker=reranker,
            store=store,
            freeze_models=freeze_models,
        )
        self.limits = RateLimits(settings)
        self.ingestion = Ingestion(settings, self.lifecycle)
        self.follower = (
            VersionFollower(
                self.lifecycle,
                replica=replica_name(settings.replica_id),
                poll_s=settings.version_poll_ms / 1000,
                lease_s=settings.replica_lease_s,
            )
            if settings.version_poll_ms
            else None
        )
        self.synthesis = AnswerSynthesis(settings, self.routing.ledger, self.lifecycle.breakers)
        self.shadows = ShadowRunner(
            self.routing,
            self.lifecycle.costs,
            deadline_ms=settings.deadline_ms,
            candidate=lambda: self.lifecycle.candidate.pipeline if self.lifecycle.candidate else None,
        )
        self.routing.learner.on_feedback = self.shadows.judge  # judged feedback scores both rankings
        self.queries = QueryHandler(
            settings,
            self.lifecycle,
            self.routing,
            CachedRetrieval(self.lifecycle, cpu=self.routing.cpu.observe),
            self.synthesis,
            self.shadows,
        )

    async def start(self) -> None:
        """Connect Redis, start what shares state through it, then load in the background."""
        redis = self.lifecycle.connect_redis()
        data_dir, collection = self.settings.data_dir, self.settings.collection
        bandit_file = data_dir / "bandit" / f"{collection}.json"
        pending_file = data_dir / "feedback" / f"{collection}-pending.sqlite"
        await self.routing.start(redis, bandit_file, pending_file)
        self.limits.start(redis)
        self.lifecycle.begin_loading()
        if self.follower is not None:
            self.follower.start(redis)
            self.ingestion.on_published = self.follower.announce

    async def stop(self) -> None:
        """Stop the users of the dependencies, then the dependencies."""
        self.lifecycle.cancel_loading()
        if self.follower is not None:
            await self.follower.close()
        self.shadows.cancel_all()
        await self.routing.close()
        await self.synthesis.close()
        self.ingestion.close()
        await self.lifecycle.close()


def feedback_log(settings: Settings) -> FeedbackLog | None:
    """The feedback log this process appends to (``RAG_FEEDBACK_LOG_MB`` per tenant; 0: none)."""
    if settings.feedback_log_mb <= 0:
        return None
    return FeedbackLog(
        log_root(settings.data_dir, settings.collection),
        max_bytes=max(1, int(settings.feedback_log_mb * 2**20)),
        replica=replica_name(settings.replica_id),
    )
