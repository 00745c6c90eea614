"""Feedback → reward: nDCG@10 of graded judgements (checked against trec_eval), reciprocal rank of
clicks, ratings, their precedence, and the cost-adjusted net reward."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rag.bandit.reward import feedback_reward, ndcg_at_k, net_reward, rating_reward, reciprocal_rank
from rag.offline.metrics import evaluate_run, ranked_run


def test_ndcg_by_hand() -> None:
    assert ndcg_at_k(["d1", "d2"], {"d1": 2, "d2": 1}) == pytest.approx(1.0)
    assert ndcg_at_k(["d1", "d2", "d3"], {"d2": 1}) == pytest.approx(1 / math.log2(3))
    ideal = 2 + 1 / math.log2(3)
    assert ndcg_at_k(["d3", "d1"], {"d1": 2, "d3": 1}) == pytest.approx((1 + 2 / math.log2(3)) / ideal)
    assert ndcg_at_k(["x", "y"], {"d1": 1}) == 0.0  # nothing relevant served
    assert ndcg_at_k(["d1"], {"d1": 0}) == 0.0  # nothing relevant at all
    served = [f"x{i}" for i in range(10)] + ["d1"]
    assert ndcg_at_k(served, {"d1": 1}) == 0.0  # rank 11 is past the cutoff
    assert ndcg_at_k(["d1", "d1"], {"d1": 1, "d2": 1}) == pytest.approx(1 / (1 + 1 / math.log2(3)))


def test_ndcg_matches_trec_eval() -> None:
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(30)]
    for case in range(20):
        served = [str(d) for d in rng.permutation(docs)[:15]]
        grades = {str(d): int(rng.integers(0, 3)) for d in rng.choice(docs, size=8, replace=False)}
        if not any(grades.values()):
            continue
        expected = evaluate_run({"q": grades}, ranked_run({"q": served}))["ndcg@10"]
        assert ndcg_at_k(served, grades) == pytest.approx(expected, abs=1e-4), case


def test_reciprocal_rank_and_rating() -> None:
    assert reciprocal_rank(["a", "b", "c"], ["c", "b"]) == 0.5
    assert reciprocal_rank(["a", "b"], ["z"]) == 0.0
    assert reciprocal_rank(["a", "b"], []) == 0.0
    assert [rating_reward(r) for r in (1, 2, 3, 4, 5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    for bad in (0, 6, float("nan"), True):
        with pytest.raises(ValueError, match=r"rating must be a number in 1\.\.5"):
            rating_reward(bad)


def test_the_strongest_signal_wins() -> None:
    served = ["a", "b", "c"]
    assert feedback_reward(served, relevance={"a": 1}, clicked=["b"], rating=1) == pytest.approx(1.0)
    assert feedback_reward(served, clicked=["b"], rating=5) == 0.5
    assert feedback_reward(served, clicked=[], rating=5) == 0.0  # saw them, clicked nothing
    assert feedback_reward(served, rating=4) == 0.75
    with pytest.raises(ValueError, match="feedback must carry one of relevance"):
        feedback_reward(served)
    with pytest.raises(ValueError, match="relevance must grade at least one doc id"):
        feedback_reward(served, relevance={}, rating=3)
    with pytest.raises(ValueError, match="grades must be finite numbers >= 0, got -1 for 'a'"):
        feedback_reward(served, relevance={"a": -1})


def test_net_reward_charges_the_cost() -> None:
    assert net_reward(0.8, 2.0, 0.05) == pytest.approx(0.7)
    assert net_reward(0.1, 3.0, 0.05) == pytest.approx(-0.05)  # not clipped
    assert net_reward(0.8, 100.0, 0.0) == 0.8
    with pytest.raises(ValueError, match="cost and cost_weight must be >= 0"):
        net_reward(0.8, -1.0, 0.05)
    with pytest.raises(ValueError, match="cost must be a finite number, got inf"):
        net_reward(0.8, float("inf"), 0.05)
