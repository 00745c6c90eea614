"""Feedback: the bandit that learns plan arms from users' ratings, and what it needs to learn.

Owns the per-tenant bandit (:class:`~rag.bandit.tenants.TenantBandits`, its exploration from the serving
routing policy's ``[router]`` section), the decisions awaiting feedback (:class:`~rag.bandit.decisions.
DecisionLog`) and the bandit's persistence (Redis when configured, else a file; saved every
:data:`SAVE_EVERY` updates and at shutdown).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag import metrics
from rag.bandit.decisions import DecisionLog
from rag.bandit.reward import feedback_reward, net_reward
from rag.bandit.store import BanditStore, FileStore, RedisStore
from rag.bandit.tenants import TenantBandits
from rag.resilience.redis import GuardedRedis
from rag.rollout.policy import RoutingPolicy
from rag.routing.analyzer import FEATURE_NAMES
from rag.routing.router import ARMS, Arm
from rag.service.planning import RoutingDecision

log = logging.getLogger(__name__)

BANDIT_STORE = "bandit_store"  # rag_background_errors_total's loop label for bandit state load/save
SAVE_EVERY = 20  # bandit updates between saves of its state (and at shutdown)


class FeedbackLearner:
    def __init__(
        self,
        policy: Callable[[], RoutingPolicy],
        *,
        shared_weight: float,
        store: BanditStore | None = None,
        decision_log: Path | None = None,
        seed: int | None = None,
    ) -> None:
        """``shared_weight``: the share of a tenant's plans drawn from the model every tenant trains
        (``RAG_BANDIT_SHARED_WEIGHT``); ``store``: where the state lives (default: chosen by
        :meth:`start`)."""
        self._policy = policy
        self.shared_weight = shared_weight
        router = policy().router
        self.bandit = TenantBandits(  # per tenant, plus a shared model of bounded weight
            [a.value for a in ARMS],
            len(FEATURE_NAMES),
            shared_weight=shared_weight,
            alpha=router.bandit_alpha,
            epsilon=router.bandit_epsilon,
        )
        self.store = store
        self.decisions = DecisionLog(log_path=decision_log)
        self._rng = np.random.default_rng(seed)
        self._updates_since_save = 0

    def apply(self, policy: RoutingPolicy) -> None:
        """Hand a newly serving policy's exploration to the bandit (a watcher listener)."""
        self.bandit.alpha = policy.router.bandit_alpha
        self.bandit.epsilon = policy.router.bandit_epsilon

    def choose(self, tenant: str, x: list[float], allowed: tuple[Arm, ...]) -> tuple[Arm, float]:
        """The router's bandit chooser: an arm among ``allowed`` for this tenant, and its probability."""
        choice = self.bandit.choose(tenant, x, self._rng, allowed=[a.value for a in allowed])
        return Arm(choice.arm), choice.propensity

    def remember(
        self,
        decision: RoutingDecision,
        *,
        tenant: str,
        request_id: str,
        cpu_s: float,
        served_ids: Sequence[str],
    ) -> None:
        """Keep an answered request's decision until its feedback comes (or it expires). ``cpu_s``: what
        it cost, the reward is net of it."""
        routed = decision.routed
        self.decisions.record(
            request_id,
            tenant,
            routed.arm.value,
            decision.features.vector(),
            routed.propensity if routed.propensity is not None else 1.0,
            served_ids,
            cost=cpu_s,
        )

    async def feedback(
        self,
        tenant: str,
        request_id: str,
        *,
        rating: float | None = None,
        clicked: Sequence[str] | None = None,
        relevance: Mapping[str, float] | None = None,
    ) -> dict[str, Any] | None:
        """Apply feedback on a served request to the bandit. None when the request is unknown to this
        replica, expired, already rated, or was served from the cache (no plan ran). Raises ValueError
        when the feedback carries no signal (the decision then stays, for a valid feedback)."""
        feedback_reward((), relevance=relevance, clicked=clicked, rating=rating)  # refuse before taking
        decision = self.decisions.take(request_id, tenant)
        if decision is None:
            return None
        quality = feedback_reward(
            decision.served_doc_ids, relevance=relevance, clicked=clicked, rating=rating
        )
        cpu_s = decision.cost
        reward = net_reward(quality, cpu_s, self._policy().router.cost_weight)
        self.bandit.update(tenant, decision.arm, decision.features, reward)
        self.decisions.log_reward(decision, reward, quality=quality, cpu_s=cpu_s)
        self._updates_since_save += 1
        if self._updates_since_save >= SAVE_EVERY:
            await self.save()
        metrics.FEEDBACK.labels(decision.arm).inc()
        metrics.BANDIT_REWARD.labels(decision.arm).observe(reward)
        return {"arm": decision.arm, "quality": quality, "reward": reward, "cpu_s": cpu_s}

    # -- persistence ---------------------------------------------------------------------------------
    async def start(self, redis: GuardedRedis | None, bandit_file: Path | None) -> None:
        """Restore the bandit: from Redis when configured, else from ``bandit_file`` (unless a store was
        given). A stale, unreadable or malformed state is counted and skipped: it learns afresh."""
        if self.store is None:
            if redis is not None:
                self.store = RedisStore(redis)
            elif bandit_file is not None:
                self.store = FileStore(bandit_file)
        if self.store is None:
            return
        try:
            state = await self.store.load()
            if state is not None:
                self.bandit = TenantBandits.from_state(
                    state, shared_weight=self.shared_weight, arms=self.bandit.arms, dim=self.bandit.dim
                )
                self.apply(self._policy())
        except Exception as exc:  # a stale, unreadable or malformed state: learn afresh, say why
            metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
            log.warning("bandit state not restored (%s); starting from scratch", str(exc)[:500])

    async def save(self) -> None:
        if self.store is not None and self._updates_since_save:
            try:
                await self.store.save(self.bandit.to_state())
                self._updates_since_save = 0
            except Exception as exc:  # kept in memory: saved with the next updates, or at shutdown
                metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
                log.warning("bandit state not saved: %s", str(exc)[:500])

    async def close(self) -> None:
        await self.save()
        self.decisions.close()
