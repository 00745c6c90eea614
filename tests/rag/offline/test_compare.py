"""The paired bootstrap of `rag eval --compare`: known differences, identical runs, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from rag.offline.compare import (
    bootstrap_ci,
    compare_metric,
    compare_results,
    paired,
    render,
    sign_flip_p,
    wins_ties_losses,
)


def test_paired_keeps_the_common_queries_sorted_and_subtracts_a_from_b() -> None:
    common, diffs = paired({"q2": 0.5, "q1": 0.2, "qa": 1.0}, {"q1": 0.4, "q2": 0.5, "qb": 0.0})
    assert common == ["q1", "q2"]
    assert diffs.tolist() == pytest.approx([0.2, 0.0])


def test_a_known_difference_gets_an_interval_around_it() -> None:
    rng = np.random.default_rng(0)
    a = rng.uniform(0, 1, 400)
    b = a + 0.05 + rng.normal(0, 0.02, 400)  # B is better by 0.05 on every query, give or take
    lo, hi = bootstrap_ci(b - a, resamples=5_000, seed=1)
    mean = float(np.mean(b - a))
    assert lo < mean < hi
    assert lo > 0.045 and hi < 0.055  # the standard error is 0.02/20 = 0.001: a narrow interval
    assert sign_flip_p(b - a, resamples=2_000) == pytest.approx(1 / 2_001)


def test_no_effect_gives_an_interval_that_holds_zero() -> None:
    rng = np.random.default_rng(3)
    diffs = rng.normal(0, 0.1, 300)
    diffs -= diffs.mean()  # exactly no mean difference
    lo, hi = bootstrap_ci(diffs, seed=5)
    assert lo < 0 < hi
    assert sign_flip_p(diffs) > 0.5


def test_identical_runs_give_zero_and_the_interval_zero_zero() -> None:
    scores = {f"q{i}": i / 10 for i in range(10)}
    c = compare_metric("ndcg@10", scores, dict(scores))
    assert (c.difference, c.ci_low, c.ci_high, c.p_value) == (0.0, 0.0, 0.0, 1.0)
    assert (c.wins, c.ties, c.losses) == (0, 10, 0) and not c.significant


def test_the_same_seed_gives_the_same_interval_and_another_seed_may_not() -> None:
    diffs = np.random.default_rng(9).normal(0.01, 0.2, 150)
    assert bootstrap_ci(diffs, seed=4) == bootstrap_ci(diffs, seed=4)
    assert bootstrap_ci(diffs, seed=4) != bootstrap_ci(diffs, seed=5)
    assert sign_flip_p(diffs, seed=4) == sign_flip_p(diffs, seed=4)


def test_the_interval_does_not_depend_on_how_the_queries_are_listed() -> None:
    a = {f"q{i}": (i * 37 % 11) / 11 for i in range(50)}
    b = {q: v + (0.1 if int(q[1:]) % 3 else -0.05) for q, v in a.items()}
    shuffled = dict(reversed(list(b.items())))
    assert compare_metric("m", a, b) == compare_metric("m", a, shuffled)


def test_chunked_resampling_matches_for_many_queries() -> None:
    diffs = np.random.default_rng(2).normal(0.02, 0.1, 20_000)  # more rows than one chunk holds at once
    lo, hi = bootstrap_ci(diffs, resamples=200, seed=1)
    assert lo < 0.02 < hi


def test_wins_ties_losses() -> None:
    assert wins_ties_losses([0.1, 0.0, -0.2, 1e-12, 0.3]) == (2, 2, 1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([0.1], confidence=1.5)
    with pytest.raises(ValueError, match="no query has ndcg@10"):
        compare_metric("ndcg@10", {"a": 1.0}, {"b": 1.0})
    with pytest.raises(ValueError, match="per-query metrics"):
        compare_results({"ndcg@10": 0.5}, {"per_query": {"q": {"ndcg@10": 0.5}}})


def test_compare_results_notes_different_query_sets_and_skips_absent_metrics() -> None:
    a = {
        "dataset": "d",
        "split": "test",
        "pipeline": "bm25",
        "per_query": {"q1": {"ndcg@10": 0.5}, "q2": {"ndcg@10": 0.2}, "q3": {"ndcg@10": 0.0}},
    }
    b = {
        "dataset": "d",
        "split": "test",
        "pipeline": "hybrid",
        "per_query": {"q1": {"ndcg@10": 0.7}, "q2": {"ndcg@10": 0.2}, "q4": {"ndcg@10": 1.0}},
    }
    report = compare_results(a, b, resamples=500)
    (row,) = report["metrics"]
    assert row["metric"] == "ndcg@10" and row["queries"] == 2
    assert row["difference"] == pytest.approx(0.1)
    assert (row["wins"], row["ties"], row["losses"]) == (1, 1, 0)
    assert report["notes"] == ["query sets differ: 1 only in A, 1 only in B; compared on the 2 both hold"]
    text = render(report)
    assert "ndcg@10" in text and "note: query sets differ" in text
