"""Feedback: the bandit that learns plan arms from users' ratings, and what it needs to learn.

Owns the per-tenant bandit (:class:`~rag.bandit.tenants.TenantBandits`, its exploration from the serving
routing policy's ``[router]`` section), the decisions awaiting feedback
(:class:`~rag.bandit.pending.PendingDecisions`: in Redis when configured, so feedback reaches any
replica; else in a SQLite file in the data dir, so it reaches any process on the machine; in process when
neither can be used) and the bandit's state shared with the other replicas
(:class:`~rag.bandit.sync.SharedBandit` over Redis when configured, else a file): each replica adds its
updates to the stored state and takes the merged one every ``sync_s`` seconds (``RAG_BANDIT_SYNC_S``)
and at shutdown. One cadence, not also every N updates: a merge costs CPU in proportion to the whole
state (about 1.6 ms per tenant with feedback), so merges are bounded by time, not by feedback volume; a
crash loses at most ``sync_s`` of this replica's feedback.

Every feedback applied is also appended to the feedback log (:class:`~rag.io.feedback_log.FeedbackLog`,
when given: ``RAG_FEEDBACK_LOG_MB`` > 0) with the query text and the doc ids the answer showed, both kept
with the pending decision until the feedback comes; ``rag feedback export`` turns that log into BEIR
qrels for the trainers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag import metrics
from rag.bandit.decisions import DecisionLog
from rag.bandit.pending import PendingDecisions, RedisDecisions
from rag.bandit.pending_sqlite import SqliteDecisions
from rag.bandit.reward import feedback_reward, net_reward
from rag.bandit.store import BanditStore, FileStore, RedisStore, State
from rag.bandit.sync import SharedBandit
from rag.bandit.tenants import TenantBandits
from rag.io.feedback_log import FeedbackEvent, FeedbackLog
from rag.resilience.redis import GuardedRedis
from rag.rollout.policy import RoutingPolicy
from rag.routing.analyzer import FEATURE_NAMES
from rag.routing.router import ARMS, Arm
from rag.service.planning import RoutingDecision

log = logging.getLogger(__name__)

BANDIT_STORE = "bandit_store"  # rag_background_errors_total's loop label for bandit state load/merge
SYNC_S = 10.0  # default seconds between merges/reads of the shared state (RAG_BANDIT_SYNC_S)


class FeedbackListener(Protocol):
    def __call__(
        self,
        tenant: str,
        request_id: str,
        *,
        clicked: Sequence[str] | None,
        relevance: Mapping[str, float] | None,
    ) -> object: ...


class FeedbackLearner:
    def __init__(
        self,
        policy: Callable[[], RoutingPolicy],
        *,
        shared_weight: float,
        store: BanditStore | None = None,
        decision_log: Path | None = None,
        seed: int | None = None,
        sync_s: float = SYNC_S,
        feedback_log: FeedbackLog | None = None,
    ) -> None:
        """``shared_weight``: the share of a tenant's plans drawn from the model every tenant trains
        (``RAG_BANDIT_SHARED_WEIGHT``); ``store``: where the state lives (default: chosen by
        :meth:`start`); ``sync_s``: seconds between syncs with the store (``RAG_BANDIT_SYNC_S``);
        ``feedback_log``: where applied feedback is kept as training data (None: nowhere)."""
        if not sync_s > 0:
            raise ValueError(f"sync_s must be > 0, got {sync_s}")
        self._policy = policy
        self.shared_weight = shared_weight
        self.sync_s = sync_s
        self.bandit = self._restore(None)  # per tenant, plus a shared model of bounded weight
        self.shared = SharedBandit(self.bandit, store, self._restore, on_invalid=self._invalid)
        self.decisions = PendingDecisions(DecisionLog(log_path=decision_log))
        self._rng = np.random.default_rng(seed)
        self._sync_loop: asyncio.Task[None] | None = None
        self.feedback_log = feedback_log
        # told of every accepted feedback (the shadow runner scores both rankings of a shadowed request)
        self.on_feedback: FeedbackListener | None = None

    @property
    def store(self) -> BanditStore | None:
        return self.shared.store

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
        query: str = "",
    ) -> None:
        """Keep an answered request's decision until its feedback comes (or it expires). ``cpu_s``: what
        it cost, the reward is net of it; ``query`` and ``served_ids``: what the feedback log records.
        With a shared store (Redis, or the data dir's SQLite file) the decision is written there in the
        background: :meth:`remembered` waits for it."""
        routed = decision.routed
        self.decisions.record(
            request_id,
            tenant,
            routed.arm.value,
            decision.features.vector(),
            routed.propensity if routed.propensity is not None else 1.0,
            served_ids,
            cost=cpu_s,
            query=query if self.feedback_log is not None else "",  # kept only when it will be logged
        )

    async def remembered(self, tenant: str, request_id: str) -> None:
        """Wait until the decision :meth:`remember` kept is where any replica can take it (or known to
        stay in this one): call it before answering."""
        await self.decisions.written(tenant, request_id)

    async def feedback(
        self,
        tenant: str,
        request_id: str,
        *,
        rating: float | None = None,
        clicked: Sequence[str] | None = None,
        relevance: Mapping[str, float] | None = None,
    ) -> dict[str, Any] | None:
        """Apply feedback on a served request to the bandit. None when the request is unknown (to every
        replica with Redis, else to every process on this machine, else to this one), expired, already
        rated, or was served from the cache (no plan ran). Raises ValueError when the feedback carries no
        signal (the decision then stays, for a valid feedback)."""
        feedback_reward((), relevance=relevance, clicked=clicked, rating=rating)  # refuse before taking
        decision = await self.decisions.take(request_id, tenant)
        if decision is None:
            return None
        quality = feedback_reward(
            decision.served_doc_ids, relevance=relevance, clicked=clicked, rating=rating
        )
        cpu_s = decision.cost
        reward = net_reward(quality, cpu_s, self._policy().router.cost_weight)
        self.shared.update(tenant, decision.arm, decision.features, reward)
        self.decisions.local.log_reward(decision, reward, quality=quality, cpu_s=cpu_s)
        if self.feedback_log is not None:
            self.feedback_log.append(
                FeedbackEvent(
                    tenant=tenant,
                    request_id=request_id,
                    query=decision.query,
                    shown=decision.served_doc_ids,
                    rating=rating,
                    clicked=None if clicked is None else tuple(clicked),
                    relevance=None if relevance is None else dict(relevance),
                    arm=decision.arm,
                    ts=time.time(),
                    replica=self.feedback_log.replica,
                )
            )
        if self.on_feedback is not None:
            self.on_feedback(tenant, request_id, clicked=clicked, relevance=relevance)
        metrics.FEEDBACK.labels(decision.arm).inc()
        metrics.BANDIT_REWARD.labels(decision.arm).observe(reward)
        return {"arm": decision.arm, "quality": quality, "reward": reward, "cpu_s": cpu_s}

    # -- persistence ---------------------------------------------------------------------------------
    async def start(
        self, redis: GuardedRedis | None, bandit_file: Path | None, pending_file: Path | None = None
    ) -> None:
        """Share pending decisions through Redis when configured (it spans machines), else through the
        SQLite ``pending_file`` (every process on this machine; an unusable file is logged and they stay
        in process); restore the bandit from Redis, else from ``bandit_file`` (unless a store was given)
        and sync with it every ``sync_s``. A stale, unreadable or malformed state is counted and skipped:
        it learns afresh (and the first merge replaces it)."""
        if redis is not None:
            self.decisions.share(RedisDecisions(redis))
        elif pending_file is not None:
            shared = SqliteDecisions(pending_file)
            if await shared.open():
                self.decisions.share(shared)
            else:
                await shared.close()
        if self.shared.store is None:
            if redis is not None:
                self.shared.store = RedisStore(redis)
            elif bandit_file is not None:
                self.shared.store = FileStore(bandit_file)
        if self.shared.store is None:
            return
        try:
            await self.shared.load()
        except Exception as exc:  # a stale, unreadable or malformed state: learn afresh, say why
            metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
            log.warning("bandit state not restored (%s); starting from scratch", str(exc)[:500])
        self._sync_loop = asyncio.create_task(self._sync_every())

    async def sync(self) -> None:
        """Add this replica's updates to the stored state and take the merged one (only read it when there
        are none). A failure is counted and logged; the updates are kept for the next sync."""
        try:
            await self.shared.sync()
        except Exception as exc:  # kept in memory: merged at the next sync, or at shutdown
            metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
            log.warning("bandit state not synced: %s", str(exc)[:500])

    async def close(self) -> None:
        if self._sync_loop is not None:
            self._sync_loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_loop
            self._sync_loop = None
        if self.shared.pending:
            await self.sync()
        await self.decisions.close()

    async def _sync_every(self) -> None:
        while True:
            await asyncio.sleep(self.sync_s)
            # shielded: stopping the loop never cuts a merge between its write and taking its result
            await asyncio.shield(self.sync())

    def _restore(self, state: State | None) -> TenantBandits:
        """The bandit of ``state`` (None: a fresh one), with the serving policy's exploration; ValueError
        for a state learnt for other arms or feature dimension, or a malformed one."""
        arms, dim = [a.value for a in ARMS], len(FEATURE_NAMES)
        router = self._policy().router
        if state is None:
            return TenantBandits(
                arms,
                dim,
                shared_weight=self.shared_weight,
                alpha=router.bandit_alpha,
                epsilon=router.bandit_epsilon,
            )
        bandits = TenantBandits.from_state(state, shared_weight=self.shared_weight, arms=arms, dim=dim)
        bandits.alpha, bandits.epsilon = router.bandit_alpha, router.bandit_epsilon
        return bandits

    def _invalid(self, exc: ValueError) -> None:
        metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
        log.warning("stored bandit state not usable (%s); replaced by the next merge", str(exc)[:500])
