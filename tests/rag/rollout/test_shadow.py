"""Shadow comparison: overlap@k and Kendall's tau-b on hand-computed rankings, edge cases without NaN,
a check of tau-b against scipy, and the deterministic request sampler."""

from __future__ import annotations

import math
import random

import pytest
from scipy.stats import kendalltau

from rag.rollout.shadow import (
    ShadowComparison,
    ShadowSampler,
    compare,
    overlap_at_k,
    rank_correlation,
    ranks_with_missing,
    top_k,
)

TEN = [f"d{i}" for i in range(10)]


def test_identical_rankings_agree_fully() -> None:
    assert overlap_at_k(TEN, TEN) == 1.0 and rank_correlation(TEN, TEN) == 1.0
    assert overlap_at_k(TEN[:3], TEN[:3]) == 1.0  # short lists: divided by the longer list, not k


def test_reversed_rankings() -> None:
    assert overlap_at_k(TEN, TEN[::-1]) == 1.0
    assert rank_correlation(TEN, TEN[::-1]) == pytest.approx(-1.0)
    assert rank_correlation(["a", "b", "c"], ["c", "b", "a"], k=3) == pytest.approx(-1.0)


def test_disjoint_rankings() -> None:
    assert overlap_at_k(["a", "b", "c"], ["x", "y", "z"], k=3) == 0.0
    # union a b c x y z; ranks in A 1 2 3 4 4 4, in B 4 4 4 1 2 3: the 9 cross pairs are discordant,
    # 3 pairs tied on each side: tau-b = (0 - 9) / sqrt((15 - 3) * (15 - 3)) = -0.75
    assert rank_correlation(["a", "b", "c"], ["x", "y", "z"], k=3) == pytest.approx(-0.75)


def test_partial_overlap() -> None:
    a, b = ["a", "b", "c", "d"], ["a", "b", "e", "c"]
    assert overlap_at_k(a, b, k=4) == 0.75
    # union a b c d e; A ranks 1 2 3 4 5 (e missing -> k+1), B ranks 1 2 4 5 3 (d missing -> 5):
    # 2 discordant pairs (c,e) (d,e) of 10, no ties: tau-b = (8 - 2) / 10
    assert rank_correlation(a, b, k=4) == pytest.approx(0.6)


def test_only_the_top_k_counts() -> None:
    a = ["a", "b", "c", "x1", "x2"]
    b = ["a", "b", "c", "y1", "y2"]
    assert overlap_at_k(a, b, k=3) == 1.0 and rank_correlation(a, b, k=3) == 1.0
    assert overlap_at_k(a, b, k=5) == 0.6


def test_missing_documents_rank_at_k_plus_one() -> None:
    assert ranks_with_missing(["a", "b"], ["b", "z", "a"], missing_rank=11) == [2, 11, 1]
    assert top_k(["a", "b", "a", "c"], 10) == ["a", "b", "c"]  # a repeated id counts once


@pytest.mark.parametrize(
    ("a", "b", "overlap", "corr"),
    [
        ([], [], 1.0, 1.0),
        (["a"], [], 0.0, 0.0),
        ([], ["a", "b"], 0.0, 0.0),
        (["a"], ["a"], 1.0, 1.0),
        (["a"], ["b"], 0.0, -1.0),
        (["a", "a", "a"], ["a"], 1.0, 1.0),
        (["a", "b"], ["a"], 0.5, 1.0),
    ],
)
def test_edge_cases_never_give_nan(a: list[str], b: list[str], overlap: float, corr: float) -> None:
    got_overlap, got_corr = overlap_at_k(a, b), rank_correlation(a, b)
    assert not math.isnan(got_overlap) and not math.isnan(got_corr)
    assert got_overlap == overlap and got_corr == pytest.approx(corr)


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be >= 1"):
        overlap_at_k(["a"], ["a"], k=0)


def test_rank_correlation_matches_scipy_tau_b() -> None:
    rng = random.Random(7)
    pool = [f"d{i}" for i in range(25)]
    for _ in range(200):
        k = rng.randint(2, 10)
        a, b = rng.sample(pool, rng.randint(1, 12)), rng.sample(pool, rng.randint(1, 12))
        a_top, b_top = a[:k], b[:k]
        union = list(dict.fromkeys([*a_top, *b_top]))
        x = ranks_with_missing(a_top, union, k + 1)
        y = ranks_with_missing(b_top, union, k + 1)
        expected = kendalltau(x, y).statistic
        ours = rank_correlation(a, b, k)
        if math.isnan(expected):
            assert ours in (0.0, 1.0)
        else:
            assert ours == pytest.approx(expected)


def test_compare_puts_it_together() -> None:
    result = compare(
        ["a", "b", "c", "d"],
        ["a", "b", "e", "c"],
        baseline_ms=120.0,
        candidate_ms=95.5,
        baseline_cost={"rerank_pairs": 40, "embed_texts": 1},
        candidate_cost={"rerank_pairs": 10, "embed_texts": 1, "llm_prompt_tokens": 300},
        k=4,
    )
    assert result == ShadowComparison(
        overlap=0.75,
        rank_corr=result.rank_corr,
        latency_delta_ms=-24.5,
        cost_delta={"embed_texts": 0, "llm_prompt_tokens": 300, "rerank_pairs": -30},
    )
    assert result.rank_corr == pytest.approx(0.6)
    assert compare([], [], 1.0, 1.0).cost_delta == {}


def test_sampler_is_deterministic_and_close_to_its_rate() -> None:
    ids = [f"req-{i}" for i in range(20_000)]
    sampler = ShadowSampler(0.1)
    picked = [i for i in ids if sampler.sampled(i)]
    assert abs(len(picked) / len(ids) - 0.1) < 0.01
    assert picked == [i for i in ids if ShadowSampler(0.1).sampled(i)]  # a replay samples the same
    assert set(picked) <= {i for i in ids if ShadowSampler(0.2).sampled(i)}  # a higher rate adds
    assert not any(ShadowSampler(0.0).sampled(i) for i in ids[:1000])
    assert all(ShadowSampler(1.0).sampled(i) for i in ids[:1000])


def test_sampler_rejects_a_rate_outside_0_1() -> None:
    with pytest.raises(ValueError, match=r"rate must be in \[0, 1\], got 1.5"):
        ShadowSampler(1.5)
