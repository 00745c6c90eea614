"""The service's routing state, composed of four parts that share one serving routing policy:

- :attr:`QueryRouting.planner` (:class:`~rag.service.planning.Planner`): a request → its plan, before
  retrieval (analysis, flags, the router);
- :attr:`QueryRouting.ledger` (:class:`~rag.service.ledger.CostLedger`): the cost model, spend against
  the budgets, the auto-fallback windows;
- :attr:`QueryRouting.learner` (:class:`~rag.service.feedback.FeedbackLearner`): the bandit, the
  decisions awaiting feedback, its persistence;
- :attr:`QueryRouting.rollout` (:class:`~rag.service.rollout_admin.RolloutAdmin`): the hot-reloaded
  rollout config (its watcher holds the one policy reference) and fallback administration.

:class:`QueryRouting` builds and wires them; callers use the parts directly, except :meth:`settle` (the
ledger books the cost, the learner keeps the decision for feedback). Transport-free.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rag.bandit.store import BanditStore
from rag.config import Settings
from rag.io.feedback_log import FeedbackLog
from rag.resilience.redis import GuardedRedis
from rag.rollout.config import Prices, Profile, ProfileLimits, RolloutConfig
from rag.rollout.policy import RoutingPolicy
from rag.rollout.watcher import ConfigWatcher
from rag.routing.budgets import BudgetMeter
from rag.routing.costs import CpuCosts, QueryCost, Usage
from rag.service.feedback import FeedbackLearner
from rag.service.ledger import CostLedger
from rag.service.planning import Planner, RoutingDecision
from rag.service.rollout_admin import RolloutAdmin


class QueryRouting:
    def __init__(
        self,
        settings: Settings,
        *,
        reranker_available: bool,
        config: RolloutConfig | None = None,
        bandit_store: BanditStore | None = None,
        decision_log: Path | None = None,
        seed: int | None = None,
        feedback_log: FeedbackLog | None = None,
    ) -> None:
        """``config``: the initial rollout config (default: ``RAG_ROLLOUT_CONFIG``'s file; a bad file
        fails here, at startup); ``feedback_log``: where applied feedback is kept as training data."""
        watcher = ConfigWatcher(
            config or RolloutConfig.load(settings.rollout_config),
            deadline_s=settings.deadline_ms / 1000.0,
            path=settings.rollout_config,
        )

        def policy() -> RoutingPolicy:  # the one reference every part reads
            return watcher.policy

        self.ledger = CostLedger(policy)
        self.learner = FeedbackLearner(
            policy,
            shared_weight=settings.bandit_shared_weight,
            store=bandit_store,
            decision_log=decision_log,
            seed=seed,
            sync_s=settings.bandit_sync_s,
            feedback_log=feedback_log,
        )
        self.planner = Planner(
            settings, policy, self.ledger, reranker_available=reranker_available, chooser=self.learner.choose
        )
        self.rollout = RolloutAdmin(watcher, self.ledger.fallback)
        watcher.listeners += [self.ledger.apply, self.learner.apply]

    # -- what the service and the routes read --------------------------------------------------------
    @property
    def policy(self) -> RoutingPolicy:
        return self.rollout.policy

    @property
    def prices(self) -> Prices:
        return self.ledger.prices

    @property
    def cpu(self) -> CpuCosts:
        return self.ledger.cpu

    @property
    def budgets(self) -> BudgetMeter:
        return self.ledger.budgets

    def limits(self, profile: Profile) -> ProfileLimits:
        """``profile``'s plan limits under the serving config (built-in ones with its overrides)."""
        return self.policy.limits(profile)

    # -- lifecycle -----------------------------------------------------------------------------------
    async def start(
        self,
        redis: GuardedRedis | None = None,
        bandit_file: Path | None = None,
        pending_file: Path | None = None,
    ) -> None:
        """Share spend through Redis, restore the bandit (Redis when configured, else ``bandit_file``),
        share pending feedback decisions (Redis, else ``pending_file``) and watch the config (the file,
        and the deployment's Redis key when Redis is configured)."""
        self.ledger.start(redis)
        await self.learner.start(redis, bandit_file, pending_file)
        self.rollout.start(redis)

    async def close(self) -> None:
        await self.rollout.close()
        await self.ledger.close()
        await self.learner.close()

    # -- per request ---------------------------------------------------------------------------------
    # The parts are called directly (``routing.planner.decide``, ``routing.ledger.book``…); settling is
    # here because it is the one step that needs two of them.
    def settle(
        self,
        decision: RoutingDecision,
        *,
        tenant: str,
        request_id: str,
        usage: Usage | None,
        ok: bool,
        timed_out: bool,
        latency_s: float,
        served_ids: Sequence[str],
        query: str = "",
    ) -> QueryCost | None:
        """Book one answered request: its cost and the candidate paths' outcomes (the ledger), and the
        routing decision for its feedback (the learner), with the ``query`` text and the ``served_ids``
        it showed (what the feedback log records). ``usage`` None: served from cache."""
        cost = self.ledger.settle(
            tenant,
            arm=decision.routed.arm.value,
            candidate_flags=decision.candidate_flags,
            usage=usage,
            ok=ok,
            timed_out=timed_out,
            latency_s=latency_s,
        )
        if cost is not None and ok and request_id:  # (a call outside HTTP has no id: nothing can rate it)
            self.learner.remember(
                decision,
                tenant=tenant,
                request_id=request_id,
                cpu_s=cost.cpu_ms_total / 1000.0,  # CPU-seconds: what the reward is net of
                served_ids=served_ids,
                query=query,
            )
        return cost
