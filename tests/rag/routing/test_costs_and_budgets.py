"""Cost model (CPU running averages, money from unit prices) and rolling-hour budgets."""

from __future__ import annotations

import threading

import pytest

from rag.rollout.config import Budgets, Prices, TenantBudget
from rag.routing.budgets import BudgetLevel, BudgetMeter, OverBudgetError, SpendWindow, budget_level
from rag.routing.costs import CpuCosts, Usage, query_cost
from rag.types import Step


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_query_cost_prices_units_and_cpu() -> None:
    prices = Prices(embed_per_1k_texts=1.0, rerank_per_1k_pairs=10.0, cpu_per_core_hour=3.6)  # 1e-6 / ms
    usage = Usage(
        steps=(Step.RETRIEVE_BM25, Step.RETRIEVE_DENSE, Step.FUSE), embedded_texts=1, rerank_pairs=20
    )
    cpu = {"retrieve.bm25": 2.0, "retrieve.dense": 40.0, "fuse": 0.5, "embed": 10.0, "rerank": 25.0}
    cost = query_cost(usage, cpu, prices)
    assert cost.cpu_ms == {
        "retrieve.bm25": 2.0,
        "retrieve.dense": 40.0,
        "fuse": 0.5,
        "embed": 10.0,
        "rerank": 500.0,
    }
    assert cost.cpu_ms_total == pytest.approx(552.5)
    assert cost.money["rerank"] == pytest.approx(500.0e-6 + 20 * 10.0 / 1000)
    assert cost.money["embed"] == pytest.approx(10.0e-6 + 1.0 / 1000)
    assert cost.money_total == pytest.approx(552.5e-6 + 0.001 + 0.2)


def test_llm_tokens_are_priced() -> None:
    cost = query_cost(Usage(prompt_tokens=1000, completion_tokens=500), {}, Prices())
    assert cost.money["synthesize"] == pytest.approx(0.15 + 0.3)


def test_cpu_costs_running_average_per_unit() -> None:
    costs = CpuCosts(alpha=0.5)
    seen: list[tuple[str, float]] = []
    costs.listeners.append(lambda step, ms: seen.append((step, ms)))
    costs.observe("rerank", 0.4, units=40)  # 10 ms per pair
    costs.observe("rerank", 0.8, units=40)  # 20 ms per pair → average 15
    costs.observe("rerank", 1.0, units=0)  # ignored
    assert costs.per_unit_ms() == {"rerank": pytest.approx(15.0)}
    assert seen[-1] == ("rerank", pytest.approx(15.0))


def test_spend_window_rolls_off_after_an_hour() -> None:
    clock = Clock()
    window = SpendWindow(clock)
    window.add("t", 1.0)
    clock.t += 30 * 60
    window.add("t", 2.0)
    assert window.spent("t") == pytest.approx(3.0)
    clock.t += 31 * 60  # the first minute is now more than an hour old
    assert window.spent("t") == pytest.approx(2.0)
    clock.t += 60 * 60
    assert window.spent("t") == 0.0


def test_spend_window_is_thread_safe() -> None:
    window = SpendWindow(Clock())
    threads = [threading.Thread(target=lambda: [window.add("t", 0.5) for _ in range(1000)]) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert window.spent("t") == pytest.approx(2000.0)


def test_budget_levels_and_the_tightest_scope() -> None:
    clock = Clock()
    policy = Budgets(
        global_per_hour=100.0,
        soft_fraction=0.8,
        tenants={"acme": TenantBudget(per_hour=1.0, over_budget="reject")},
    )
    budgets = BudgetMeter(lambda: policy, SpendWindow(clock))
    assert budgets.state("acme").level is BudgetLevel.OK
    budgets.record("acme", 0.85)
    state = budgets.state("acme")
    assert state.level is BudgetLevel.SOFT and state.scope == "tenant" and state.action == "reject"
    budgets.record("acme", 0.2)
    assert budgets.state("acme").level is BudgetLevel.OVER
    other = budgets.state("globex")  # only the global budget applies to globex: 1.05 of 100
    assert other.level is BudgetLevel.OK and other.scope == "global" and other.action == "cheap_plan"
    budgets.record("globex", 99.0)
    assert budgets.state("globex").level is BudgetLevel.OVER
    clock.t += 2 * 3600
    assert budgets.state("acme").level is BudgetLevel.OK


def test_no_budget_means_no_pressure_and_zero_budget_allows_nothing() -> None:
    budgets = BudgetMeter(Budgets)
    budgets.record("t", 1e6)
    assert budgets.state("t").level is BudgetLevel.OK and budgets.state("t").pressure == 0.0
    zero = BudgetMeter(lambda: Budgets(tenants={"t": TenantBudget(per_hour=0.0)}))
    assert zero.state("t").level is BudgetLevel.OVER


def test_budget_level_thresholds() -> None:
    assert budget_level(0.79, 0.8) is BudgetLevel.OK
    assert budget_level(0.8, 0.8) is BudgetLevel.SOFT
    assert budget_level(1.0, 0.8) is BudgetLevel.OVER


def test_the_meter_reads_the_budgets_serving_now() -> None:
    """A reload changes the budgets (the rollout config's section), not the spend."""
    serving = [Budgets(tenants={"acme": TenantBudget(per_hour=1.0)})]
    budgets = BudgetMeter(lambda: serving[0], SpendWindow(Clock()))
    budgets.record("acme", 0.5)
    assert budgets.state("acme").level is BudgetLevel.OK
    serving[0] = Budgets(tenants={"acme": TenantBudget(per_hour=0.5)})
    assert budgets.state("acme").level is BudgetLevel.OVER and budgets.policy is serving[0]


def test_over_budget_error_says_what_and_when() -> None:
    budgets = BudgetMeter(lambda: Budgets(tenants={"acme": TenantBudget(per_hour=1.0)}))
    budgets.record("acme", 2.0)
    err = OverBudgetError("acme", budgets.state("acme"))
    assert "acme" in str(err) and "tenant budget" in str(err) and "2.0000 of 1" in str(err)
