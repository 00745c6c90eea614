"""Spend against budgets: money per rolling hour, for the whole deployment and per tenant.

The budgets themselves are the rollout config's ``[budgets]`` section
(:class:`rag.rollout.config.Budgets`, validated there); this module keeps the spend and answers a
tenant's :class:`BudgetState` under the budgets serving now. Spend is kept in one-minute buckets over the
last 60 minutes. As spend nears a budget (past ``soft_fraction`` of it) the router picks cheaper plans;
past the budget a tenant gets either a cheap plan or a refusal (``over_budget``), as configured. With
Redis, replicas add their spend to shared per-minute counters, so a budget holds for the deployment, not
per replica.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from rag.errors import RagError
from rag.rollout.config import Budgets, OverBudget, TenantBudget

WINDOW_MINUTES = 60
GLOBAL = "*"


class BudgetLevel(StrEnum):
    OK = "ok"
    SOFT = "soft"  # past the soft fraction: cheaper plans
    OVER = "over"  # past the budget: cheap plan or refusal


@dataclass(frozen=True, slots=True)
class BudgetState:
    level: BudgetLevel
    pressure: float  # the highest spend / budget share of the budgets that apply (0 when unlimited)
    scope: str | None  # which budget is the tightest: "global" or "tenant"
    spent: float  # in the scope's window
    budget: float | None
    action: OverBudget  # what happens when over

    @classmethod
    def unlimited(cls) -> BudgetState:
        """The state where no budget applies (evaluation, or no budgets configured)."""
        return cls(BudgetLevel.OK, 0.0, None, 0.0, None, "cheap_plan")

    def as_dict(self) -> dict[str, object]:
        """What a tenant's response shows. Under the global budget, no numbers: the deployment's spend is
        every tenant's traffic, which no tenant may read (the level still says soft/over)."""
        if self.scope == "global":
            return {
                "level": self.level.value,
                "pressure": None,
                "scope": self.scope,
                "spent_last_hour": None,
                "budget_per_hour": None,
            }
        return {
            "level": self.level.value,
            "pressure": round(self.pressure, 4),
            "scope": self.scope,
            "spent_last_hour": round(self.spent, 6),
            "budget_per_hour": self.budget,
        }


def budget_level(pressure: float, soft_fraction: float) -> BudgetLevel:
    if pressure >= 1.0:
        return BudgetLevel.OVER
    return BudgetLevel.SOFT if pressure >= soft_fraction else BudgetLevel.OK


class SpendWindow:
    """Money spent per scope over the last hour, in one-minute buckets. Thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._buckets: dict[str, dict[int, float]] = {}
        self._lock = threading.Lock()

    def _minute(self) -> int:
        return int(self.clock() // 60)

    def add(self, scope: str, amount: float) -> None:
        if amount <= 0:
            return
        minute = self._minute()
        with self._lock:
            buckets = self._buckets.setdefault(scope, {})
            buckets[minute] = buckets.get(minute, 0.0) + amount
            for old in [m for m in buckets if m <= minute - WINDOW_MINUTES]:
                del buckets[old]

    def spent(self, scope: str) -> float:
        oldest = self._minute() - WINDOW_MINUTES
        with self._lock:
            return sum(v for m, v in self._buckets.get(scope, {}).items() if m > oldest)

    def scopes(self) -> list[str]:
        with self._lock:
            return list(self._buckets)

    def minute_totals(self, scope: str) -> dict[int, float]:
        """A copy of ``scope``'s buckets: minute → spend."""
        with self._lock:
            return dict(self._buckets.get(scope, {}))

    def merge(self, scope: str, minute_totals: Mapping[int, float]) -> None:
        """Replace the buckets of ``scope`` with shared totals (read from Redis)."""
        with self._lock:
            self._buckets[scope] = dict(minute_totals)


class BudgetMeter:
    """Tracks spend and answers the budget state of a tenant under the budgets serving now (``budgets``
    is read at each call: a config reload changes them without touching the spend). ``add`` records
    spend (default: into the window; :class:`rag.routing.shared_spend.SharedSpend.add` when replicas share
    it through Redis)."""

    def __init__(self, budgets: Callable[[], Budgets], window: SpendWindow | None = None) -> None:
        self._budgets = budgets
        self.window = window or SpendWindow()
        self.add: Callable[[str, float], None] = self.window.add

    @property
    def policy(self) -> Budgets:
        """The budgets serving now."""
        return self._budgets()

    def record(self, tenant: str, amount: float) -> None:
        self.add(GLOBAL, amount)
        self.add(tenant, amount)

    def state(self, tenant: str) -> BudgetState:
        policy = self._budgets()
        tenant_budget = policy.tenants.get(tenant, TenantBudget())
        action = tenant_budget.over_budget or policy.over_budget
        candidates: list[tuple[float, str, float, float]] = []
        if policy.global_per_hour is not None:
            spent = self.window.spent(GLOBAL)
            candidates.append(
                (_share(spent, policy.global_per_hour), "global", spent, policy.global_per_hour)
            )
        if tenant_budget.per_hour is not None:
            spent = self.window.spent(tenant)
            candidates.append(
                (_share(spent, tenant_budget.per_hour), "tenant", spent, tenant_budget.per_hour)
            )
        if not candidates:
            return BudgetState(BudgetLevel.OK, 0.0, None, self.window.spent(tenant), None, action)
        pressure, scope, spent, budget = max(candidates)
        return BudgetState(
            budget_level(pressure, policy.soft_fraction), pressure, scope, spent, budget, action
        )


def _share(spent: float, budget: float) -> float:
    if budget == 0:
        return float("inf") if spent > 0 else 1.0  # a zero budget allows nothing
    return spent / budget


class OverBudgetError(RagError, RuntimeError):
    """A tenant past its hard budget, configured to refuse (``over_budget = "reject"``)."""

    def __init__(self, tenant: str, state: BudgetState) -> None:
        budget = "unlimited" if state.budget is None else f"{state.budget:g}"
        spent = (  # the deployment's spend is every tenant's traffic: not told to one of them
            "the deployment's hourly budget is spent"
            if state.scope == "global"
            else f"spent {state.spent:.4f} of {budget} per hour"
        )
        super().__init__(
            f"tenant {tenant!r} is over its {state.scope} budget: {spent} (rolling); queries resume as the "
            "hour's spend rolls off"
        )
        self.tenant = tenant
        self.state = state
        self.retry_after_s = 60
