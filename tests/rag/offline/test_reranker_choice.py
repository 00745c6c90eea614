"""`rag train-reranker`'s blend choice: the first stage alone is always a candidate, and wins unless a
blend beats it on the held-out queries by at least the minimum gain."""

from __future__ import annotations

from rag.offline.reranker_training import MIN_RERANK_GAIN, blend_table, choose_blend_weight


def test_the_first_stage_alone_wins_when_every_blend_loses() -> None:
    # the SciFact log of the issue: first stage 0.760, best blend 0.739
    assert choose_blend_weight(0.760, {0.0: 0.712, 0.5: 0.739, 2.0: 0.735}) is None


def test_a_gain_below_the_minimum_is_not_worth_a_rerank() -> None:
    assert choose_blend_weight(0.700, {0.0: 0.700 + MIN_RERANK_GAIN / 2}) is None
    assert choose_blend_weight(0.700, {0.0: 0.700}, min_gain=0.0) is None  # a tie: the rerank buys nothing
    assert choose_blend_weight(0.700, {0.0: 0.701}, min_gain=0.0) == 0.0


def test_the_best_blend_wins_when_it_pays() -> None:
    assert choose_blend_weight(0.70, {0.0: 0.71, 0.5: 0.74, 1.0: 0.73}) == 0.5


def test_ties_between_blends_go_to_the_smaller_weight() -> None:
    assert choose_blend_weight(0.70, {1.0: 0.74, 0.25: 0.74, 2.0: 0.70}) == 0.25


def test_no_blends_means_no_rerank() -> None:
    assert choose_blend_weight(0.5, {}) is None


def test_the_table_names_the_first_stage_and_each_blend() -> None:
    assert blend_table(0.7, {0.0: 0.71, 1.5: 0.72}) == {
        "first_stage_only": 0.7,
        "blend_0.0": 0.71,
        "blend_1.5": 0.72,
    }
