"""Shadow runs: for a sampled request, the rollout's candidate plan runs after the answer, in the
background, and its ranking, latency and cost are compared with what the user got (metrics and a log
line, :meth:`rag.service.routing.QueryRouting.record_shadow`). It never slows or changes the answer: one
shadow at a time (a busy slot skips the sample), its own deadline, and no breakers (a shadow's failures
must not open the users' breakers).

The candidate is a plan (a flag the router reads), or — flag ``candidate_index`` — the staged candidate
collection of a new embedder running the served plan (:mod:`rag.candidates`). Either way the two rankings
are kept for a while (bounded), so that feedback judging documents of that request scores both
(:meth:`ShadowRunner.judge`): a paired, live quality comparison, not only an agreement one."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rag import metrics
from rag.acl import AccessScope
from rag.bandit.reward import feedback_reward
from rag.candidates import CANDIDATE_FLAG
from rag.resilience.deadline import Deadline, StepCosts
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import QueryPlan
from rag.retrieval.step_runner import Guards
from rag.routing.costs import Usage, usage_of
from rag.service.planning import RoutingDecision
from rag.service.routing import QueryRouting

log = logging.getLogger(__name__)


JUDGEABLE_RUNS = 10_000  # shadow runs whose two rankings wait for feedback (oldest forgotten first)


@dataclass(frozen=True, slots=True)
class ShadowedRankings:
    tenant: str
    flag: str
    served: tuple[str, ...]
    candidate: tuple[str, ...]


class ShadowRunner:
    def __init__(
        self,
        routing: QueryRouting,
        costs: StepCosts,
        *,
        deadline_ms: int,
        candidate: Callable[[], SearchPipeline | None] = lambda: None,
    ) -> None:
        """``candidate``: the staged candidate collection's pipeline, when one is open."""
        self.routing = routing
        self.costs = costs
        self.deadline_ms = deadline_ms
        self._candidate = candidate
        self._slot = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._judgeable: OrderedDict[str, ShadowedRankings] = OrderedDict()

    def maybe_run(
        self,
        *,
        tenant: str,
        query: str,
        filters: dict[str, Any] | None,
        top_k: int,
        pipeline: SearchPipeline,
        decision: RoutingDecision,
        access: AccessScope | None = None,  # the request's document-ACL scope: the shadow sees no more
        request_id: str,
        baseline_ids: Sequence[str],
        baseline_ms: float,
        baseline_usage: Usage | None,
    ) -> None:
        """Start the shadow run of this request when it is sampled and the candidate plans differently."""
        shadow = self.routing.planner.shadow_plan(decision, request_id)
        if shadow is None:
            return
        flag, plan = shadow
        if flag == CANDIDATE_FLAG:
            candidate = self._candidate()
            if candidate is None:
                metrics.SHADOW_RUNS.labels(flag, "no_candidate").inc()
                return
            pipeline = candidate
        if self._slot.locked():
            metrics.SHADOW_RUNS.labels(flag, "skipped_busy").inc()
            return
        task = asyncio.create_task(
            self._run(
                flag,
                plan,
                tenant,
                query,
                SearchFilter.of(tenant, filters, access=access).within(pipeline.snapshot),
                top_k,
                pipeline,
                request_id,
                baseline_ids,
                baseline_ms,
                baseline_usage,
            ),
            name=f"shadow:{request_id}",
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self,
        flag: str,
        plan: QueryPlan,
        tenant: str,
        query: str,
        flt: SearchFilter,
        top_k: int,
        pipeline: SearchPipeline,
        request_id: str,
        baseline_ids: Sequence[str],
        baseline_ms: float,
        baseline_usage: Usage | None,
    ) -> None:
        async with self._slot:
            started = time.perf_counter()
            guards = Guards(Deadline.after_ms(self.deadline_ms), {}, self.costs, lane=f"shadow:{tenant}")
            try:
                outcome = await pipeline.run(query, plan, flt, None, guards)
            except Exception as exc:
                metrics.SHADOW_RUNS.labels(flag, "error").inc()
                log.info("shadow %s for %s failed: %s", flag, request_id, exc)
                return
            took_ms = (time.perf_counter() - started) * 1000.0
            candidate_ids = [r.doc_id for r in pipeline.results(outcome.hits, top_k)]
            self._keep(request_id, ShadowedRankings(tenant, flag, tuple(baseline_ids), tuple(candidate_ids)))
            self.routing.ledger.record_shadow(
                flag,
                request_id,
                baseline_ids=baseline_ids,
                candidate_ids=candidate_ids,
                baseline_ms=baseline_ms,
                candidate_ms=took_ms,
                baseline_usage=baseline_usage,
                candidate_usage=usage_of(outcome),
            )

    def _keep(self, request_id: str, rankings: ShadowedRankings) -> None:
        self._judgeable[request_id] = rankings
        if len(self._judgeable) > JUDGEABLE_RUNS:
            self._judgeable.popitem(last=False)

    def judge(
        self,
        tenant: str,
        request_id: str,
        *,
        clicked: Sequence[str] | None = None,
        relevance: Mapping[str, float] | None = None,
    ) -> ShadowedRankings | None:
        """Score feedback that judges documents (graded ``relevance``, else ``clicked``; a bare rating
        judges no document) on both rankings of a request this process shadowed: the same measure the
        bandit's reward uses (:func:`rag.bandit.reward.feedback_reward`). Counted once per request, for
        its own tenant only. Returns the rankings judged, or None."""
        if relevance is None and clicked is None:
            return None
        rankings = self._judgeable.get(request_id)
        if rankings is None or rankings.tenant != tenant:
            return None
        del self._judgeable[request_id]
        served = feedback_reward(rankings.served, relevance=relevance, clicked=clicked)
        candidate = feedback_reward(rankings.candidate, relevance=relevance, clicked=clicked)
        outcome = "candidate" if candidate > served else "served" if served > candidate else "tie"
        metrics.SHADOW_JUDGED.labels(rankings.flag, outcome).inc()
        metrics.SHADOW_JUDGED_QUALITY.labels(rankings.flag, "served").inc(served)
        metrics.SHADOW_JUDGED_QUALITY.labels(rankings.flag, "candidate").inc(candidate)
        log.info(
            "shadow %s judged for %s: served %.3f, candidate %.3f",
            rankings.flag,
            request_id,
            served,
            candidate,
        )
        return rankings

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
