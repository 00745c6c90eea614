"""Fitting a collection's confidence scale (:class:`rag.index.calibration.ScoreCalibration`) from judged
queries: each query's served top 10, for each set of legs a plan may run (BM25 alone, dense alone, both
fused as the collection fuses them), with the evidence the service shows
(:func:`rag.retrieval.explain.explain`) and the query's judgements as labels. ``rag tune`` fits it on
the queries it tunes on and stores it in the tuning record; ``benchmarks/calibration.py`` fits it on
SciFact's train split and shows it on test.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from rag.fusion import FusionChoice, fuse
from rag.index.calibration import CALIBRATION_DEPTH, ScoreCalibration
from rag.retrieval.explain import BM25, DENSE
from rag.retrieval.explain import explain as explain_hits
from rag.retrieval.step_runner import SearchOutcome
from rag.types import Evidence, Hit, ListKey

Samples = dict[str, list[tuple[Evidence, bool]]]


def outcomes(bm25: Sequence[Hit], dense: Sequence[Hit], fusion: FusionChoice) -> dict[str, SearchOutcome]:
    """What a run of each leg set would keep of one query (its lists, its fused ranking), as the pipeline
    keeps it (:class:`~rag.retrieval.step_runner.SearchOutcome`)."""
    out = {
        "bm25": SearchOutcome(hits=list(bm25), lists={BM25: list(bm25)}),
        "dense": SearchOutcome(hits=list(dense), lists={DENSE: list(dense)}),
    }
    lists: dict[ListKey, list[Hit]] = {BM25: list(bm25), DENSE: list(dense)}
    weights = {BM25: fusion.weights["bm25"], DENSE: fusion.weights["dense"]}
    fused = fuse(fusion.method, lists, weights, rrf_k=fusion.rrf_k)
    out["bm25+dense"] = SearchOutcome(hits=fused, lists=lists, fused=fused)
    return out


def add_samples(samples: Samples, runs: Mapping[str, SearchOutcome], relevant: set[str]) -> None:
    """Each leg set's served top 10 of one query, as (evidence, judged relevant) pairs."""
    for legs, outcome in runs.items():
        head = outcome.hits[:CALIBRATION_DEPTH]
        for hit, evidence in zip(head, explain_hits(outcome, head), strict=True):
            samples.setdefault(legs, []).append((evidence, hit.doc_id in relevant))


def fit_calibration(
    qrels: Sequence[Mapping[str, int]],
    bm25: Sequence[Sequence[Hit]],
    dense: Sequence[Sequence[Hit]],
    fusion: FusionChoice,
    source: str,
    embedder: str = "",
) -> ScoreCalibration:
    """The scale fitted on per-query BM25 and dense lists (same order as ``qrels``)."""
    samples: Samples = {}
    for judged, b, d in zip(qrels, bm25, dense, strict=True):
        relevant = {doc for doc, grade in judged.items() if grade > 0}
        add_samples(samples, outcomes(b, d, fusion), relevant)
    return ScoreCalibration.fit(samples, source, embedder=embedder)
