"""A collection's score calibration: the estimated probability that a result is relevant, from its
first-stage evidence (:class:`rag.types.Evidence`), on a scale a request's ``min_score`` can name.

Why a fitted model, and where it lives. Raw scores are not comparable across collections or query
shapes: a BM25 score grows with the query's length and its terms' rarity, a cosine depends on the
embedder and the corpus, an RRF score only encodes ranks. A fixed mapping would read the same number as
equally trustworthy everywhere; it is not. So the scale is fitted per collection, on the queries
``rag tune`` already judges (the collection's labelled queries, or its own pseudo-queries when it has
none: :mod:`rag.offline.tuning`), and kept in the same record as the tuning (the manifest of the version
that serves it, carried forward by later ingests: :mod:`rag.index.tuning`). A collection that was never
tuned has no calibration: its results carry ``confidence: null`` and a ``min_score`` is refused (422)
rather than compared with a number that means nothing.

The model: one logistic regression per set of legs that ran (``bm25``, ``dense``, ``bm25+dense``; a leg
that degraded away changes which one applies), over :data:`FEATURES` of the result's evidence, fitted on
the results a plan serves (each query's top 10) with the queries' judgements as labels. Limits, stated:
it estimates P(judged relevant) *for queries like the ones it was fitted on* (pseudo-queries have one
relevant document each, so a calibration fitted on them under-states P for queries with several); the
rerank score is not a feature (no reranker is validated everywhere; a reranked result's confidence is
its first-stage one); multi-query lists are not features.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.types import Evidence, LegEvidence

MANIFEST_FIELD = "calibration"  # inside the tuning record
FEATURES = (
    "intercept",
    "bm25.present",
    "bm25.log1p_score",
    "bm25.neg_log_rank",
    "dense.present",
    "dense.cosine",
    "dense.neg_log_rank",
)
LEG_SETS = ("bm25", "dense", "bm25+dense")
L2_PENALTY = 1.0  # ridge on every coefficient but the intercept: thousands of samples, seven features
CALIBRATION_DEPTH = 10  # fitted on the results a plan serves: each query's top 10


def legs_of(retrievers: Sequence[str]) -> str:
    """The key of the model for the legs that ran (``bm25+dense`` for both, in that order)."""
    return "+".join(r for r in ("bm25", "dense") if r in retrievers)


def feature_row(evidence: Evidence) -> tuple[float, ...]:
    """The evidence as the model's features (:data:`FEATURES`); an absent leg is zeros. Plain floats: the
    served path computes one confidence per result, where numpy's per-call overhead would dominate."""
    return legs_row(evidence.bm25, evidence.dense)


def legs_row(b: LegEvidence | None, d: LegEvidence | None) -> tuple[float, ...]:
    """:func:`feature_row` from the two legs' evidence."""
    return (
        1.0,
        1.0 if b is not None else 0.0,
        math.log1p(max(b.score, 0.0)) if b is not None else 0.0,
        -math.log(b.rank) if b is not None else 0.0,
        1.0 if d is not None else 0.0,
        d.score if d is not None else 0.0,
        -math.log(d.rank) if d is not None else 0.0,
    )


def features(evidence: Evidence) -> np.ndarray:
    """:func:`feature_row` as an array (for fitting)."""
    return np.array(feature_row(evidence))


def fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = L2_PENALTY, iterations: int = 50) -> np.ndarray:
    """Coefficients of an L2-penalised logistic regression (Newton's method; the intercept, column 0,
    unpenalised). Deterministic; converges in a handful of steps on well-scaled features."""
    k = x.shape[1]
    w = np.zeros(k)
    penalty = np.full(k, l2)
    penalty[0] = 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty * w
        hess = (x * (p * (1.0 - p))[:, None]).T @ x + np.diag(penalty) + 1e-9 * np.eye(k)
        step = np.linalg.solve(hess, grad)
        w -= step
        if float(np.max(np.abs(step))) < 1e-8:
            break
    return w


@dataclass(frozen=True, slots=True)
class ScoreCalibration:
    """Fitted coefficients per leg set (over :data:`FEATURES`), what they were fitted on, and how many
    (result, judgement) pairs and positives each saw."""

    weights: Mapping[str, tuple[float, ...]]
    source: str  # "labelled: …" or "pseudo-queries: …" (as the tuning's)
    samples: Mapping[str, tuple[int, int]]  # leg set -> (pairs, relevant pairs)
    # the embedder whose cosines it read ("" = any): a version re-embedded with another model carries the
    # tuning record forward, but not this scale (IndexSnapshot.calibration checks it)
    embedder: str = ""

    def __post_init__(self) -> None:
        for legs, w in self.weights.items():
            if legs not in LEG_SETS or len(w) != len(FEATURES):
                raise ValueError(
                    f"calibration: weights must map one of {list(LEG_SETS)} to {len(FEATURES)} numbers, "
                    f"got {legs!r}: {len(w)}"
                )

    def confidence(self, evidence: Evidence, legs: str) -> float | None:
        """Estimated P(relevant) of a result with ``evidence`` when ``legs`` ran; None when no model was
        fitted for those legs."""
        return self.confidence_of(evidence.bm25, evidence.dense, legs)

    def confidence_of(self, bm25: LegEvidence | None, dense: LegEvidence | None, legs: str) -> float | None:
        """:meth:`confidence` from the two legs' evidence (what the served path has in hand)."""
        w = self.weights.get(legs)
        if w is None:
            return None
        z = math.fsum(map(operator.mul, w, legs_row(bm25, dense)))
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def applies_to(self, embedder: str | None) -> bool:
        """Whether the scale reads cosines of ``embedder`` (the version's, from its manifest)."""
        return not self.embedder or self.embedder == embedder

    @classmethod
    def fit(
        cls,
        rows: Mapping[str, Sequence[tuple[Evidence, bool]]],
        source: str,
        *,
        embedder: str = "",
        l2: float = L2_PENALTY,
    ) -> ScoreCalibration:
        """Fit one model per leg set from (evidence, relevant) pairs; a leg set with no positive or no
        negative pair gets no model."""
        weights, samples = {}, {}
        for legs, pairs in rows.items():
            y = np.array([1.0 if rel else 0.0 for _, rel in pairs])
            if not pairs or y.min() == y.max():
                continue
            x = np.stack([features(e) for e, _ in pairs])
            weights[legs] = tuple(round(float(v), 6) for v in fit_logistic(x, y, l2=l2))
            samples[legs] = (len(pairs), int(y.sum()))
        return cls(weights, source, samples, embedder)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": "logistic",
            "features": list(FEATURES),
            "weights": {k: list(v) for k, v in self.weights.items()},
            "samples": {k: list(v) for k, v in self.samples.items()},
            "source": self.source,
            "embedder": self.embedder,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoreCalibration:
        if list(data.get("features", FEATURES)) != list(FEATURES):
            raise ValueError(f"calibration: features {data.get('features')} are not this code's {FEATURES}")
        return cls(
            {str(k): tuple(float(x) for x in v) for k, v in dict(data["weights"]).items()},
            str(data.get("source", "")),
            {str(k): (int(v[0]), int(v[1])) for k, v in dict(data.get("samples", {})).items()},
            str(data.get("embedder", "")),
        )
