"""`rag tune` fits the confidence scale on the queries it tunes on and publishes it with the tuning: the
served results of the new version carry a confidence; an ingest carries the scale forward."""

from __future__ import annotations

from pathlib import Path

from rag.bm25.index import BM25Params
from rag.config import Settings
from rag.fusion import FusionChoice
from rag.index.calibration import CALIBRATION_DEPTH, FEATURES, ScoreCalibration
from rag.index.tuning import CollectionTuning
from rag.offline.calibration import outcomes
from rag.offline.tuning import run_tune
from rag.retrieval.filters import SearchFilter
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime
from rag.types import Document, Hit
from tests.conftest import make_ingestor
from tests.rag.offline.test_tuning import beir, tuned_settings  # noqa: F401 (fixtures)


def test_rag_tune_publishes_a_calibration_the_served_results_read(
    beir: Path,  # noqa: F811
    tuned_settings: Settings,  # noqa: F811
) -> None:
    result = run_tune(tuned_settings, data=beir, split="test", pseudo=0, seed=1, publish=True, progress=False)
    stored = result["calibration"]
    assert set(stored["weights"]) == {"bm25", "dense", "bm25+dense"}
    assert stored["source"].startswith("labelled: syn/test") and stored["embedder"]
    assert result["evidence"]["calibration"]["bm25+dense"]["pairs"] == 24 * CALIBRATION_DEPTH
    runtime = Runtime.open(tuned_settings, load_reranker=False)
    try:
        assert runtime.snapshot.calibration is not None
        for pipeline in (PipelineName.HYBRID, PipelineName.BM25, PipelineName.DENSE):
            plan = plan_for(
                pipeline,
                tuned_settings,
                top_k=5,
                reranker_available=False,
                fusion=runtime.snapshot.tuned_fusion,
            )
            outcome = runtime.pipeline.search("w1 w2 w3", plan, SearchFilter(None))
            results = runtime.pipeline.results(outcome.hits, 5, outcome=outcome)
            assert results
            for r in results:
                assert r.evidence is not None and r.evidence.confidence is not None
                assert 0.0 <= r.evidence.confidence <= 1.0
    finally:
        runtime.close()
    ingestor, store = make_ingestor(tuned_settings)
    ingestor.ingest([Document("extra", "One more document about w1 and w2 and w3.", "Extra")])
    store.close()
    carried = Runtime.open(tuned_settings, load_reranker=False)
    assert carried.snapshot.calibration is not None
    assert carried.snapshot.calibration.to_json() == stored
    carried.close()


def test_the_fitting_outcomes_are_the_pipelines_lists() -> None:
    bm25 = [Hit("a", 3.0, "a"), Hit("b", 2.0, "b")]
    dense = [Hit("b", 0.9, "b"), Hit("c", 0.5, "c")]
    runs = outcomes(bm25, dense, FusionChoice())
    assert [h.doc_id for h in runs["bm25"].hits] == ["a", "b"] and runs["bm25"].fused is None
    assert runs["bm25+dense"].hits[0].doc_id == "b"  # in both lists
    assert runs["bm25+dense"].fused == runs["bm25+dense"].hits


def test_a_scale_fitted_on_another_embedders_cosines_is_not_read(
    beir: Path,  # noqa: F811
    tuned_settings: Settings,  # noqa: F811
) -> None:
    """A re-embedded version carries the tuning record forward; its scale read the old model's cosines."""
    runtime = Runtime.open(tuned_settings, load_reranker=False)
    embedder = str(runtime.snapshot.manifest["embedder"])
    runtime.close()
    for fitted_on, read in ((embedder, True), ("another-model", False), ("", True)):
        cal = ScoreCalibration({"dense": (0.0,) * len(FEATURES)}, "a test", {}, fitted_on)
        ingestor, store = make_ingestor(tuned_settings)
        ingestor.retune(CollectionTuning(BM25Params(), FusionChoice(), "a test", "", {}, cal).to_json())
        store.close()
        runtime = Runtime.open(tuned_settings, load_reranker=False)
        try:
            assert runtime.snapshot.tuning is not None and runtime.snapshot.tuning.calibration == cal
            assert (runtime.snapshot.calibration == cal) is read
        finally:
            runtime.close()
