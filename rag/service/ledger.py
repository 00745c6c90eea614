"""The cost ledger: what a request's work costs, who pays for it, and how candidate paths fare.

Owns the CPU cost model (running CPU-ms per step, :class:`~rag.routing.costs.CpuCosts`), the spend
against the budgets (:class:`~rag.routing.budgets.BudgetMeter`, shared between replicas through Redis when
configured) and the auto-fallback windows of candidate paths (:class:`~rag.rollout.fallback.AutoFallback`).
Prices, budgets and fallback thresholds are the serving routing policy's, read through the one reference
(:attr:`rag.rollout.watcher.ConfigWatcher.policy`). :meth:`CostLedger.book` is the one place work is
charged (retrieval and synthesis alike).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from rag import metrics
from rag.resilience.redis import GuardedRedis
from rag.rollout.config import Prices
from rag.rollout.fallback import AutoFallback, FallbackEvent
from rag.rollout.policy import RoutingPolicy
from rag.rollout.shadow import ShadowComparison, compare
from rag.routing.budgets import BudgetLevel, BudgetMeter, BudgetState, OverBudgetError
from rag.routing.costs import CpuCosts, QueryCost, Usage, query_cost
from rag.routing.shared_spend import SharedSpend

log = logging.getLogger(__name__)


class CostLedger:
    def __init__(self, policy: Callable[[], RoutingPolicy]) -> None:
        """``policy``: the serving routing policy (read at each use)."""
        self._policy = policy
        self.cpu = CpuCosts()
        self.cpu.listeners.append(lambda step, ms: metrics.STEP_CPU.labels(step).set(ms / 1000.0))
        self.budgets = BudgetMeter(lambda: policy().budgets)
        self.fallback = AutoFallback(policy().fallback)
        self.fallback.listeners.append(_fallback_metrics)
        self.shared_spend: SharedSpend | None = None

    @property
    def prices(self) -> Prices:
        return self._policy().prices

    def apply(self, policy: RoutingPolicy) -> None:
        """Hand a newly serving policy's fallback thresholds to the windows (a watcher listener; the
        policy is built already, so this cannot fail half-way)."""
        self.fallback.set_policy(policy.fallback)

    def start(self, redis: GuardedRedis | None) -> None:
        """Share spend with the other replicas through ``redis`` (when configured)."""
        if redis is not None:
            self.shared_spend = SharedSpend(self.budgets.window, redis)
            self.budgets.add = self.shared_spend.add
            self.shared_spend.start()

    async def close(self) -> None:
        if self.shared_spend is not None:
            await self.shared_spend.close()

    # -- per request ---------------------------------------------------------------------------------
    def admit(self, tenant: str) -> BudgetState:
        """``tenant``'s budget state, counted in the budget metrics. Raises :class:`OverBudgetError` for
        a tenant past a hard budget whose action is ``reject``."""
        budget = self.budgets.state(tenant)
        pressure = budget.pressure if budget.pressure != float("inf") else 1e9
        metrics.BUDGET_PRESSURE.labels(tenant).set(pressure)
        if budget.level is BudgetLevel.OVER and budget.action == "reject":
            metrics.BUDGET_EXCEEDED.labels(tenant, "reject").inc()
            raise OverBudgetError(tenant, budget)
        if budget.level is BudgetLevel.OVER:
            metrics.BUDGET_EXCEEDED.labels(tenant, "cheap_plan").inc()
        return budget

    def book(self, tenant: str, usage: Usage) -> QueryCost:
        """Price ``usage`` (the running CPU averages, the unit prices) and book it with ``tenant``: the
        cost metrics and its budget window. The one place work is charged (retrieval, synthesis)."""
        cost = query_cost(usage, self.cpu.per_unit_ms(), self.prices)
        for step, ms in cost.cpu_ms.items():
            metrics.COST_CPU.labels(step, tenant).inc(ms / 1000.0)
        for step, money in cost.money.items():
            metrics.COST_MONEY.labels(step, tenant).inc(money)
        self.budgets.record(tenant, cost.money_total)
        return cost

    def settle(
        self,
        tenant: str,
        *,
        arm: str,
        candidate_flags: Sequence[str],
        usage: Usage | None,
        ok: bool,
        timed_out: bool,
        latency_s: float,
    ) -> QueryCost | None:
        """Book one answered request: the candidate paths' outcomes (auto-fallback) and its cost (metrics,
        budgets). ``usage`` None: served from cache, nothing to charge."""
        for name in candidate_flags:
            self.fallback.record((tenant, name), ok=ok, timed_out=timed_out, latency_s=latency_s)
        if usage is None:
            return None
        cost = self.book(tenant, usage)
        metrics.QUERY_COST.labels(arm).observe(cost.money_total)
        return cost

    def record_shadow(
        self,
        flag: str,
        request_id: str,
        *,
        baseline_ids: Sequence[str],
        candidate_ids: Sequence[str],
        baseline_ms: float,
        candidate_ms: float,
        baseline_usage: Usage | None,
        candidate_usage: Usage,
    ) -> ShadowComparison:
        """Compare a shadow run with the answer it shadowed (ranking, latency, cost at today's prices) and
        record it (metrics, a log line). Nobody is charged for the shadow run."""
        per_unit, prices = self.cpu.per_unit_ms(), self.prices
        base = query_cost(baseline_usage or Usage(), per_unit, prices)
        cand = query_cost(candidate_usage, per_unit, prices)
        result = compare(
            baseline_ids,
            candidate_ids,
            baseline_ms,
            candidate_ms,
            {"cpu_ms": base.cpu_ms_total, "money": base.money_total},
            {"cpu_ms": cand.cpu_ms_total, "money": cand.money_total},
        )
        metrics.SHADOW_RUNS.labels(flag, "ok").inc()
        metrics.SHADOW_OVERLAP.labels(flag).observe(result.overlap)
        metrics.SHADOW_RANK_CORR.labels(flag).observe(result.rank_corr)
        metrics.SHADOW_LATENCY_DELTA.labels(flag).observe(result.latency_delta_ms / 1000.0)
        metrics.SHADOW_COST_DELTA.labels(flag).observe(result.cost_delta.get("money", 0.0))
        log.info(
            "shadow comparison",
            extra={
                "shadow": {
                    "flag": flag,
                    "request_id": request_id,
                    "overlap_at_10": round(result.overlap, 3),
                    "rank_corr": round(result.rank_corr, 3),
                    "latency_delta_ms": round(result.latency_delta_ms, 2),
                    "cost_delta": {k: round(v, 8) for k, v in result.cost_delta.items()},
                }
            },
        )
        return result


def _fallback_metrics(event: FallbackEvent) -> None:
    tenant, flag = event.key
    metrics.FALLBACK_TRIPPED.labels(tenant, flag).set(1 if event.kind == "tripped" else 0)
    metrics.FALLBACK_EVENTS.labels(flag, event.kind).inc()
