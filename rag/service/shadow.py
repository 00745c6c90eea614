"""Shadow runs: for a sampled request, the rollout's candidate plan runs after the answer, in the
background, and its ranking, latency and cost are compared with what the user got (metrics and a log
line, :meth:`rag.service.routing.QueryRouting.record_shadow`). It never slows or changes the answer: one
shadow at a time (a busy slot skips the sample), its own deadline, and no breakers (a shadow's failures
must not open the users' breakers)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from rag import metrics
from rag.resilience.deadline import Deadline, StepCosts
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import QueryPlan
from rag.retrieval.step_runner import Guards
from rag.routing.costs import Usage, usage_of
from rag.service.planning import RoutingDecision
from rag.service.routing import QueryRouting

log = logging.getLogger(__name__)


class ShadowRunner:
    def __init__(self, routing: QueryRouting, costs: StepCosts, *, deadline_ms: int) -> None:
        self.routing = routing
        self.costs = costs
        self.deadline_ms = deadline_ms
        self._slot = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()

    def maybe_run(
        self,
        *,
        tenant: str,
        query: str,
        filters: dict[str, Any] | None,
        top_k: int,
        pipeline: SearchPipeline,
        decision: RoutingDecision,
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
        if self._slot.locked():
            metrics.SHADOW_RUNS.labels(flag, "skipped_busy").inc()
            return
        task = asyncio.create_task(
            self._run(
                flag,
                plan,
                tenant,
                query,
                filters,
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
        filters: dict[str, Any] | None,
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
                outcome = await pipeline.run(query, plan, SearchFilter.of(tenant, filters), None, guards)
            except Exception as exc:
                metrics.SHADOW_RUNS.labels(flag, "error").inc()
                log.info("shadow %s for %s failed: %s", flag, request_id, exc)
                return
            took_ms = (time.perf_counter() - started) * 1000.0
            self.routing.ledger.record_shadow(
                flag,
                request_id,
                baseline_ids=baseline_ids,
                candidate_ids=[r.doc_id for r in pipeline.results(outcome.hits, top_k)],
                baseline_ms=baseline_ms,
                candidate_ms=took_ms,
                baseline_usage=baseline_usage,
                candidate_usage=usage_of(outcome),
            )

    def cancel_all(self) -> None:
        for task in list(self._tasks):
            task.cancel()
