"""The rerank depth's run-time policy: the agreement gate and the cut to the pairs that fit."""

from __future__ import annotations

import pytest

from rag.retrieval.rerank_depth import (
    MIN_USEFUL_DEPTH,
    affordable_pairs,
    agreement,
    fitted_depth,
    gated_depth,
)


def test_agreement_and_gate() -> None:
    assert agreement(["a", "b", "c"], ["c", "b", "x"], k=10) == pytest.approx(0.2)
    assert agreement([], ["a"]) == 0.0
    assert gated_depth(0.6, 0.5, 40) == 40
    assert gated_depth(0.4, 0.5, 40) == 0
    assert gated_depth(None, 0.5, 40) == 40  # one retriever: nothing to compare
    assert gated_depth(0.0, None, 40) == 40


def test_affordable_pairs() -> None:
    assert affordable_pairs(0.2, 0.01, 0.01) == 19
    assert affordable_pairs(0.005, 0.01, 0.01) == 0
    assert affordable_pairs(1.0, 0.0, 0.0) is None


def test_fitted_depth_cuts_only_to_a_useful_depth() -> None:
    assert fitted_depth(40, 0.2, 0.01, 0.01) == 19  # 19 pairs fit
    assert fitted_depth(10, 0.2, 0.01, 0.01) == 10  # all fit
    assert fitted_depth(40, 1.0, 0.0, 0.0) == 40  # per-pair cost unknown yet
    too_few = (MIN_USEFUL_DEPTH - 1) * 0.01 + 0.01 + 0.001
    assert fitted_depth(40, too_few, 0.01, 0.01) == 40  # the guarded step skips it instead
