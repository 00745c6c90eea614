"""The offline bandit simulation runs, and LinUCB beats uniform choice where the features tell the plans
apart."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.bandit_sim import parse_dump, simulate, synthetic_rows


def two_plan_rows(n: int = 40) -> list[dict]:
    """Plan "left" is right when f is high, "right" when it is low; free, so reward = nDCG."""
    rows = []
    for i, f in enumerate(np.random.default_rng(0).uniform(0, 1, size=n)):
        arms = {
            "left": {"ndcg": float(f), "cost_ms": 0.0, "pairs": 0},
            "right": {"ndcg": float(1 - f), "cost_ms": 0.0, "pairs": 0},
        }
        rows.append({"qid": f"q{i}", "features": [float(f)], "arms": arms})
    return rows


def test_linucb_beats_uniform_on_a_clear_problem() -> None:
    result = simulate(parse_dump(two_plan_rows()), rounds=600, seeds=2, alpha=0.3, epsilon=0.05)
    late = {p: m["reward"]["last_half"]["mean"] for p, m in result["policies"].items()}
    assert late["linucb"] > late["uniform"] + 0.15  # uniform ≈ 0.5, the oracle ≈ 0.75
    assert late["oracle"] >= late["linucb"]
    assert set(result["linucb_arm_share"]["all"]) == {"left", "right"}
    assert len(result["curves"]["linucb"]) == 600


def test_the_synthetic_dump_runs_end_to_end() -> None:
    dump = parse_dump(synthetic_rows(n_queries=30, seed=1))
    assert dump.arms == ("bm25", "hybrid", "hybrid-rerank-20", "hybrid-rerank-50")
    result = simulate(dump, rounds=200, seeds=1)
    assert result["policies"]["best fixed"]["pairs"]["all"]["std"] == 0.0
    assert result["best_fixed_arm_per_seed"][0] in dump.arms


def test_a_dump_with_inconsistent_plans_is_refused() -> None:
    rows = two_plan_rows(2)
    del rows[1]["arms"]["right"]
    with pytest.raises(ValueError, match=r"query q1: plans \['left'\] differ from the first query's"):
        parse_dump(rows)
    rows = two_plan_rows(2)
    rows[1]["features"] = [1.0, 2.0]
    with pytest.raises(ValueError, match="query q1: expected 1 features, got 2"):
        parse_dump(rows)
