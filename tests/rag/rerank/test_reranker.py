"""Reranking: the ordering function, a tiny CrossEncoder loaded by path, the pipeline step, and training."""

from pathlib import Path

import numpy as np
import pytest

from rag.rerank.cross_encoder import CrossEncoderReranker, rerank
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime
from rag.testing.tiny_models import build_tiny_cross_encoder
from rag.types import Hit
from tests.conftest import ANIMALS, make_ingestor


def hits(*ids: str) -> list[Hit]:
    return [Hit(d, 1.0 / (i + 1), f"{d}#0") for i, d in enumerate(ids)]


def test_rerank_reorders_only_the_head() -> None:
    out = rerank(hits("a", "b", "c", "d"), np.array([0.1, 0.9, 0.5]), depth=3)
    assert [h.doc_id for h in out] == ["b", "c", "a", "d"]
    assert out[0].score == pytest.approx(0.9)


def test_first_stage_blend_can_keep_a_strong_first_stage_hit() -> None:
    ce = np.array([0.2, 0.3, 0.9, 0.1])
    assert rerank(hits("a", "b", "c", "d"), ce, depth=4)[0].doc_id == "c"
    assert rerank(hits("a", "b", "c", "d"), ce, depth=4, first_stage_weight=2.0)[0].doc_id == "a"


def test_rerank_checks_score_count() -> None:
    with pytest.raises(ValueError, match="got 1 reranker scores for 2 hits"):
        rerank(hits("a", "b"), np.array([1.0]), depth=2)


@pytest.fixture
def tiny_model(tmp_path: Path) -> Path:
    return build_tiny_cross_encoder(
        tmp_path / "tiny-ce", [f"{d.title} {d.text}" for d in ANIMALS] + ["query"]
    )


def test_crossencoder_loads_by_path_and_scores_deterministically(tiny_model: Path) -> None:
    reranker = CrossEncoderReranker(str(tiny_model), max_length=64, batch_size=4)
    a = reranker.score("mice hunting", ["cats hunt mice", "bees make honey", "owls hunt mice"])
    b = reranker.score("mice hunting", ["cats hunt mice", "bees make honey", "owls hunt mice"])
    assert a.shape == (3,) and np.allclose(a, b)
    assert reranker.score("q", []).shape == (0,)


def test_pipeline_reranks_with_configured_model(settings, tiny_model: Path) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    store.close()
    # a tiny model with no domain record: it reranks only by the operator's override (test_domain.py)
    settings = settings.model_copy(
        update={"reranker_model": str(tiny_model), "rerank_depth": 4, "reranker_allow_unvalidated": True}
    )
    runtime = Runtime.open(settings)
    try:
        plan = plan_for(PipelineName.HYBRID_RERANK, settings, top_k=6, reranker_available=True)
        base = runtime.pipeline.search("animals that hunt mice", plan.with_(rerank_depth=0))
        outcome = runtime.pipeline.search("animals that hunt mice", plan)
    finally:
        runtime.close()
    assert outcome.rerank_pairs == 4 and "rerank" in outcome.timings_ms and not outcome.degraded
    assert sorted(h.doc_id for h in outcome.hits[:4]) == sorted(h.doc_id for h in base.hits[:4])
    assert [h.doc_id for h in outcome.hits[4:]] == [h.doc_id for h in base.hits[4:]]


@pytest.mark.slow
def test_train_reranker_produces_a_loadable_model(
    settings, tiny_model: Path, animals_beir: Path, tmp_path: Path
) -> None:
    from rag.offline.reranker_training import TrainConfig, train_reranker

    (animals_beir / "qrels" / "train.tsv").write_text((animals_beir / "qrels" / "test.tsv").read_text())
    out = tmp_path / "trained"
    report = train_reranker(
        settings,
        animals_beir,
        out,
        config=TrainConfig(
            negatives=2,
            in_batch_negatives=1,
            mine_depth=5,
            epochs=1,
            batch_size=4,
            max_length=64,
            validation_queries=1,
            base_model=str(tiny_model),
        ),
    )
    assert report["groups"] >= 4 and report["pairs_per_epoch"] == report["groups"] * (1 + 2 + 1)
    assert (out / "rag_reranker.json").is_file()
    reranker = CrossEncoderReranker(str(out), max_length=64)
    assert reranker.score("fish", ["salmon swim"]).shape == (1,)
    assert reranker.first_stage_weight == (report["first_stage_weight"] or report["best_blend_weight"])


@pytest.mark.parametrize("quantize", [False, True])
def test_onnx_backend_matches_torch_scores(tiny_model: Path, quantize: bool) -> None:
    from rag.rerank.onnx_backend import OnnxCrossEncoderReranker

    passages = ["cats hunt mice at night", "bees make honey", "whales sing", "owls hunt mice"]
    expected = CrossEncoderReranker(str(tiny_model), max_length=64).score("who hunts mice", passages)
    onnx = OnnxCrossEncoderReranker(str(tiny_model), max_length=64, batch_size=3, quantize=quantize)
    got = onnx.score("who hunts mice", passages)
    assert got.shape == expected.shape
    if quantize:  # int8 weights: close (ranking fidelity on the real model is in benchmarks/)
        assert np.allclose(got, expected, atol=0.02)
    else:
        assert np.allclose(got, expected, atol=1e-4)
    assert (tiny_model / "onnx" / ("model_int8.onnx" if quantize else "model.onnx")).is_file()


def test_onnx_backend_needs_a_local_folder() -> None:
    from rag.rerank.onnx_backend import OnnxCrossEncoderReranker

    with pytest.raises(ValueError, match="needs a local model folder"):
        OnnxCrossEncoderReranker("cross-encoder/ms-marco-MiniLM-L-6-v2")


def test_title_pseudo_queries_leave_titles_out_and_skip_excluded_docs(settings) -> None:
    import random

    from rag.offline.reranker_training import TrainConfig, mine_title_groups
    from rag.types import Document

    docs = [
        Document(
            f"d{i}",
            f"Body text number {i} about topic {i % 3} with shared words.",
            f"Long title for item {i}",
        )
        for i in range(12)
    ]
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(docs)
    store.close()
    runtime = Runtime.open(settings, load_reranker=False)
    try:
        config = TrainConfig(negatives=3, mine_depth=8, pseudo_queries=20)
        groups = mine_title_groups(runtime, {"d0", "d1"}, config, random.Random(0))
    finally:
        runtime.close()
    assert len(groups) == 10  # 12 documents minus the 2 excluded
    by_title = {d.title: d for d in docs}
    for title, positive, *negatives in groups:
        doc = by_title[title]
        assert doc.doc_id not in {"d0", "d1"}
        assert positive == doc.text and len(negatives) == 3
        assert all("Long title" not in p for p in (positive, *negatives))
        assert positive not in negatives
