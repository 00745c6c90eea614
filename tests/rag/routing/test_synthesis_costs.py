"""Pricing an LLM call before it is made: token estimates, the budget check, usage filled in where the
endpoint reported none."""

from __future__ import annotations

from rag.llm import Synthesis, estimate_tokens, request_tokens, with_usage
from rag.rollout.config import Prices
from rag.routing.budgets import BudgetLevel, BudgetState
from rag.routing.costs import budget_refusal, llm_money
from rag.types import Result

RESULTS = [Result(doc_id="a", score=1.0, rank=1, title="A", text="x" * 400, chunk_id="a#0")]


def state(spent: float, budget: float | None, level: BudgetLevel = BudgetLevel.OK) -> BudgetState:
    return BudgetState(
        level, 0.0 if budget is None else spent / max(budget, 1e-12), "tenant", spent, budget, "cheap_plan"
    )


def test_a_call_is_refused_when_it_could_pass_the_budget_and_allowed_within_it() -> None:
    assert budget_refusal(state(0.0, None), 10.0) is None  # no budget: anything goes
    assert budget_refusal(state(0.5, 1.0), 0.4) is None
    assert "would pass its tenant budget" in (budget_refusal(state(0.5, 1.0), 0.6) or "")
    assert "over its tenant budget" in (budget_refusal(state(1.0, 1.0, BudgetLevel.OVER), 0.0) or "")


def test_the_most_a_synthesis_may_cost_is_its_estimated_prompt_and_max_tokens() -> None:
    prompt, completion = request_tokens("why?", RESULTS, max_passages=5, max_tokens=256)
    assert completion == 256 and prompt >= estimate_tokens("x" * 400) == 100
    assert llm_money(1000, 200, Prices()) == (1000 * 0.15 + 200 * 0.6) / 1000


def test_usage_is_estimated_where_the_endpoint_reported_none() -> None:
    reported = Synthesis("about it", "m", 10, 5)
    assert with_usage(reported, "why?", RESULTS, 5) == reported
    estimated = with_usage(Synthesis("x" * 40, "m"), "why?", RESULTS, 5)
    assert estimated.completion_tokens == 10 and estimated.prompt_tokens > 100
