"""The cost model: CPU-milliseconds per step (measured, kept as running averages per unit of work) and
money per query from configurable unit prices.

CPU is measured where the work runs: thread CPU time for the steps that run in one worker thread (BM25,
the vector search, fusion), and for model calls the model thread's CPU time times its intra-op threads,
shared over the items of the micro-batch (so a batched pair costs what it really costs). Money is
``units × unit price`` for embeddings, reranked pairs and LLM tokens, plus CPU time at a core-hour price
(:class:`rag.rollout.config.Prices`, hot-reloaded with the rollout config). An LLM call is priced before
it is made (its prompt estimated, its completion at ``max_tokens``) and refused when that could pass
the tenant's budget (:func:`budget_refusal`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from rag.resilience.deadline import StepCosts
from rag.rollout.config import Prices  # the unit prices of the rollout config: one definition
from rag.routing.budgets import BudgetLevel, BudgetState
from rag.types import Step, StepKey


@dataclass(frozen=True, slots=True)
class Usage:
    """The work one query did, in units."""

    steps: tuple[Step, ...] = ()  # the per-query CPU steps that ran (retrieve.bm25, retrieve.dense, fuse)
    embedded_texts: int = 0
    rerank_pairs: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True, slots=True)
class QueryCost:
    cpu_ms: dict[str, float] = field(default_factory=dict)  # by step
    money: dict[str, float] = field(default_factory=dict)  # by step (cpu included in each step's share)

    @property
    def cpu_ms_total(self) -> float:
        return sum(self.cpu_ms.values())

    @property
    def money_total(self) -> float:
        return sum(self.money.values())


class RunOutcome(Protocol):
    """What the cost model reads from a pipeline run (:class:`rag.retrieval.step_runner.SearchOutcome`)."""

    @property
    def timings(self) -> Mapping[StepKey, float]: ...

    embedded_texts: int
    rerank_pairs: int


CPU_STEPS = frozenset({Step.RETRIEVE_BM25, Step.RETRIEVE_BM25_PRF, Step.RETRIEVE_DENSE, Step.FUSE})


def usage_of(outcome: RunOutcome) -> Usage:
    """The work a pipeline run did, in the cost model's units: the CPU steps that ran (a sub-query's
    search counts as one more search), texts embedded and pairs reranked."""
    steps = tuple(run.step for run in outcome.timings if run.step in CPU_STEPS)
    return Usage(steps=steps, embedded_texts=outcome.embedded_texts, rerank_pairs=outcome.rerank_pairs)


def query_cost(usage: Usage, cpu_per_unit_ms: Mapping[str, float], prices: Prices) -> QueryCost:
    """CPU and money of one query from its usage, the running CPU averages and the unit prices."""
    units: dict[str, int] = {step: 1 for step in usage.steps}
    if usage.embedded_texts:
        units[Step.EMBED] = usage.embedded_texts
    if usage.rerank_pairs:
        units[Step.RERANK] = usage.rerank_pairs
    cpu = {step: n * cpu_per_unit_ms.get(step, 0.0) for step, n in units.items()}
    per_cpu_ms = prices.cpu_per_core_hour / 3_600_000.0
    money = {step: ms * per_cpu_ms for step, ms in cpu.items()}
    money[Step.EMBED] = money.get(Step.EMBED, 0.0) + usage.embedded_texts * prices.embed_per_1k_texts / 1000
    money[Step.RERANK] = money.get(Step.RERANK, 0.0) + usage.rerank_pairs * prices.rerank_per_1k_pairs / 1000
    llm = llm_money(usage.prompt_tokens, usage.completion_tokens, prices)
    if llm:
        money[Step.SYNTHESIZE] = llm
    return QueryCost(cpu, {step: m for step, m in money.items() if m})


def llm_money(prompt_tokens: int, completion_tokens: int, prices: Prices) -> float:
    """Money of LLM tokens at the price model's per-1k token prices."""
    return (
        prompt_tokens * prices.llm_per_1k_prompt_tokens
        + completion_tokens * prices.llm_per_1k_completion_tokens
    ) / 1000


def budget_refusal(state: BudgetState, amount: float) -> str | None:
    """Why a call that may cost up to ``amount`` must not be made under ``state``, or None when it may:
    the tenant is over a budget already, or the call could take it past the tightest one."""
    if state.budget is None and state.level is not BudgetLevel.OVER:
        return None
    limit = "unlimited" if state.budget is None else f"{state.budget:g}"
    if state.level is BudgetLevel.OVER:
        return f"over its {state.scope} budget: spent {state.spent:.6f} of {limit} per hour"
    assert state.budget is not None
    if state.spent + amount > state.budget:
        return (
            f"a call of up to {amount:.6f} would pass its {state.scope} budget: spent {state.spent:.6f} "
            f"of {limit} per hour"
        )
    return None


class CpuCosts(StepCosts):
    """Running averages of CPU time per unit of each step (the deadline's :class:`StepCosts`, fed with
    CPU rather than wall time), with listeners told each new average in milliseconds (metrics)."""

    def __init__(self, alpha: float = 0.05) -> None:
        super().__init__(alpha)
        self.listeners: list[Callable[[str, float], None]] = []

    def observe(self, step: str, seconds: float, units: int = 1) -> None:
        if units <= 0 or seconds < 0:
            return
        super().observe(step, seconds, units)
        value_ms = self.estimate_s(step) * 1000.0
        for listener in self.listeners:
            listener(step, value_ms)

    def per_unit_ms(self) -> dict[str, float]:
        return {step: self.estimate_s(step) * 1000.0 for step in self.steps()}
