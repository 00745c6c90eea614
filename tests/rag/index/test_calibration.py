"""The confidence scale: a fit that is calibrated where it was fitted, monotone in the evidence, and
stored with the tuning record (old records without one still read)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.bm25.index import BM25Params
from rag.fusion import FusionChoice
from rag.index.calibration import FEATURES, ScoreCalibration, features, fit_logistic, legs_of
from rag.index.tuning import CollectionTuning
from rag.types import Evidence, LegEvidence


def _synthetic(n: int, seed: int) -> list[tuple[Evidence, bool]]:
    """Dense cosine and rank drive relevance through a known logistic law."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        cos = float(rng.uniform(0.0, 1.0))
        rank = int(rng.integers(1, 11))
        bm25 = (
            LegEvidence(int(rng.integers(1, 11)), float(rng.uniform(0, 20))) if rng.random() < 0.7 else None
        )
        p = 1.0 / (1.0 + np.exp(-(6.0 * cos - 0.3 * np.log(rank) - 3.5)))
        out.append((Evidence(bm25, LegEvidence(rank, cos)), bool(rng.random() < p)))
    return out


def test_a_fit_is_calibrated_on_data_like_its_own_and_monotone_in_the_cosine() -> None:
    cal = ScoreCalibration.fit({"bm25+dense": _synthetic(6000, 1)}, "synthetic")
    held_out = _synthetic(6000, 2)
    p = np.array([cal.confidence(e, "bm25+dense") for e, _ in held_out], dtype=float)
    y = np.array([r for _, r in held_out], dtype=float)
    for lo in np.arange(0.0, 1.0, 0.2):  # reliability: predicted vs observed per bucket
        inside = (p >= lo) & (p < lo + 0.2)
        if inside.sum() >= 200:
            assert abs(p[inside].mean() - y[inside].mean()) < 0.06
    low, high = (Evidence(None, LegEvidence(1, c)) for c in (0.2, 0.9))
    assert cal.confidence(low, "bm25+dense") < cal.confidence(high, "bm25+dense")  # type: ignore[operator]
    assert cal.confidence(high, "bm25") is None  # no model for legs it was not fitted on
    assert cal.samples["bm25+dense"][0] == 6000


def test_a_leg_set_without_both_labels_gets_no_model() -> None:
    pairs = [(Evidence(LegEvidence(1, 3.0)), False)] * 5
    assert ScoreCalibration.fit({"bm25": pairs}, "x").weights == {}


def test_features_and_legs() -> None:
    assert len(features(Evidence())) == len(FEATURES)
    assert features(Evidence())[1:].tolist() == [0.0] * (len(FEATURES) - 1)
    assert legs_of(("dense", "bm25")) == "bm25+dense" and legs_of(("dense",)) == "dense"
    x = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, 2.0], [1.0, 3.0]])
    w = fit_logistic(x, np.array([0.0, 0.0, 1.0, 1.0]))
    assert w[1] > 0


def test_the_tuning_record_stores_it_and_reads_old_records_without_it() -> None:
    cal = ScoreCalibration.fit({"dense": _synthetic(500, 3)}, "labelled: syn/train (50 queries)")
    tuning = CollectionTuning(BM25Params(), FusionChoice(), "s", "v000001", {}, cal)
    again = CollectionTuning.from_json(tuning.to_json())
    assert again == tuning and again.calibration == cal
    old = {k: v for k, v in tuning.to_json().items() if k != "calibration"}
    assert CollectionTuning.from_json(old).calibration is None
    with pytest.raises(ValueError, match="features"):
        ScoreCalibration.from_json({**cal.to_json(), "features": ["intercept"]})
    with pytest.raises(ValueError, match="weights must map"):
        ScoreCalibration({"hybrid": (0.0,) * len(FEATURES)}, "x", {})
