"""`rag tune`: the decision rule, the ranking it re-implements, and what publishing a tuning changes."""

import random
from pathlib import Path

import numpy as np
import pytest

from rag.bm25.index import BM25Params
from rag.config import Settings
from rag.fusion import FusionChoice, FusionMethod
from rag.index.tuning import CollectionTuning
from rag.offline.tuning import (
    TuningRun,
    cross_fitted_gains,
    decide,
    fold_of,
    labelled_queries,
    pool_documents,
    pseudo_queries,
    reset_tuning,
    run_tune,
)
from rag.retrieval.plan import PipelineName, configured_fusion, plan_for
from rag.retrieval.retrievers import BM25Retriever
from rag.runtime import Runtime
from rag.types import Document
from tests.conftest import make_ingestor, write_beir

WORDS = [f"w{i}" for i in range(300)]


def corpus(n: int = 40, seed: int = 7) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        sentences = [
            " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 14))).capitalize() + "."
            for _ in range(7)
        ]
        title = " ".join(rng.choice(WORDS) for _ in range(4)).capitalize()
        docs.append(Document(f"d{i}", " ".join(sentences), title))
    return docs


@pytest.fixture
def tuned_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"candidates": 20})


@pytest.fixture
def beir(tmp_path: Path, tuned_settings: Settings) -> Path:
    docs = corpus()
    rng = random.Random(3)
    queries, qrels = {}, {}
    for i in range(24):
        doc = docs[rng.randrange(len(docs))]
        words = doc.text.replace(".", "").split()
        queries[f"q{i}"] = " ".join(rng.sample(words, 4))
        qrels[f"q{i}"] = {doc.doc_id: 1}
    folder = write_beir(tmp_path / "syn", docs, queries, qrels)
    ingestor, store = make_ingestor(tuned_settings)
    ingestor.ingest(docs)
    store.close()
    return folder


# -- the decision ------------------------------------------------------------------------------------------
def test_a_clear_gain_is_taken_and_noise_is_not() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, size=300)
    kinds = ["labelled"] * 300
    better = np.stack([base, base + 0.05, base - 0.01])
    taken = decide(better, 0, kinds, np.random.default_rng(1))
    assert taken.accepted and taken.chosen == 1 and taken.gain[0] > 0
    noisy = np.stack([base, base + rng.normal(0.0, 0.05, size=300)])  # as good on average, by chance
    noisy[1] += 0.001 - (noisy[1] - base).mean()  # the grid's best by a hair
    kept = decide(noisy, 0, kinds, np.random.default_rng(1))
    assert kept.best == 1 and not kept.accepted and kept.chosen == 0
    assert "not above 0" in kept.reason


def test_a_setting_a_kind_of_query_loses_with_is_not_chosen() -> None:
    kinds = ["title"] * 100 + ["passage"] * 100
    base = np.full(200, 0.5)
    greedy = base.copy()
    greedy[100:] += 0.2  # passages gain a lot
    greedy[:100] -= 0.02  # titles lose more than the tolerance
    modest = base.copy()
    modest[100:] += 0.05
    modest[:100] -= 0.004  # within the tolerance
    decision = decide(np.stack([base, greedy, modest]), 0, kinds, np.random.default_rng(2))
    assert decision.best == 1 and decision.chosen == 2 and decision.accepted
    assert decision.reason.startswith("the best on all queries loses on title queries; gain on held-out")
    only_greedy = decide(np.stack([base, greedy]), 0, kinds, np.random.default_rng(2))
    assert not only_greedy.accepted and only_greedy.chosen == 0
    assert "no other setting does better without a kind of query losing" in only_greedy.reason


def test_cross_fitted_gain_uses_the_choice_of_the_other_folds() -> None:
    scores = np.asarray([[0.5, 0.5, 0.5, 0.5], [1.0, 1.0, 0.0, 0.0]])
    folds = np.asarray([0, 0, 1, 1])
    # fold 0 is scored with the choice of fold 1 (the default wins there), and the other way round
    assert cross_fitted_gains(scores, 0, ["q"] * 4, folds).tolist() == [0.0, 0.0, -0.5, -0.5]
    spread = fold_of(["a"] * 10 + ["b"] * 5, 5, np.random.default_rng(0))
    assert sorted(np.bincount(spread[:10]).tolist()) == [2] * 5 and len(set(spread[10:].tolist())) == 5


def test_pool_documents_scores_a_document_by_its_best_row() -> None:
    rows = np.asarray([0, 1, 2, 3])
    scores = np.asarray([0.2, 0.9, 0.5, 0.5])
    row_doc = np.asarray([0, 0, 1, 2])
    hits = pool_documents(rows, scores, row_doc, ["a", "b", "c"], 3)
    assert [(h.doc_id, h.score) for h in hits] == [("a", 0.9), ("b", 0.5), ("c", 0.5)]


# -- the ranking it re-implements is the served one --------------------------------------------------------
def test_the_tuning_run_ranks_as_the_service_does(beir: Path, tuned_settings: Settings) -> None:
    runtime = Runtime.open(tuned_settings, load_reranker=False)
    try:
        queries = labelled_queries(beir, "test", set(runtime.snapshot.doc_ids))
        run = TuningRun.prepare(runtime, queries, np.random.default_rng(0))
        lexical, semantic = run.bm25(runtime.snapshot.bm25_params), run.dense()
        served_bm25 = BM25Retriever(runtime.snapshot)
        hybrid = plan_for(PipelineName.HYBRID, tuned_settings, top_k=10, reranker_available=False)
        dense = plan_for(PipelineName.DENSE, tuned_settings, top_k=10, reranker_available=False)
        for text, bm25_hits, dense_hits in zip(queries.texts, lexical, semantic, strict=True):
            assert [h.doc_id for h in bm25_hits] == [h.doc_id for h in served_bm25.retrieve(text, 20)]
            served_dense = runtime.pipeline.search(text, dense).hits
            assert [h.doc_id for h in dense_hits[:10]] == [h.doc_id for h in served_dense[:10]]
            fused = runtime.pipeline.search(text, hybrid).hits
            from rag.offline.tuning import _fused

            assert _fused(configured_fusion(tuned_settings), bm25_hits, dense_hits) == [
                h.doc_id for h in fused[:10]
            ]
    finally:
        runtime.close()


# -- publishing ----------------------------------------------------------------------------------------------
def test_rag_tune_publishes_a_version_that_serves_its_choice(beir: Path, tuned_settings: Settings) -> None:
    before = Runtime.open(tuned_settings, load_reranker=False)
    old_version = before.snapshot.version
    before.close()
    result = run_tune(tuned_settings, data=beir, split="test", pseudo=0, seed=1, publish=True, progress=False)
    assert result["published"] and result["published"] != old_version
    assert result["source"].startswith("labelled: syn/test (24 queries)")
    runtime = Runtime.open(tuned_settings, load_reranker=False)
    try:
        tuning = runtime.snapshot.tuning
        assert tuning is not None and tuning.tuned_on == old_version
        assert runtime.snapshot.bm25_params == tuning.bm25
        plan = plan_for(
            PipelineName.HYBRID,
            tuned_settings,
            reranker_available=False,
            fusion=runtime.snapshot.tuned_fusion,
        )
        assert (
            plan.fusion_reason.startswith("rag tune on labelled")
            and plan.fusion_reason == tuning.fusion.reason
        )
        assert plan.as_dict()["fusion_reason"] == plan.fusion_reason
    finally:
        runtime.close()
    # an ingest after it carries the record forward; --reset publishes a version without it
    ingestor, store = make_ingestor(tuned_settings)
    ingestor.ingest([Document("extra", "One more document about w1 and w2 and w3.", "Extra")])
    store.close()
    carried = Runtime.open(tuned_settings, load_reranker=False)
    assert carried.snapshot.tuning == tuning
    carried.close()
    assert reset_tuning(tuned_settings, None)["tuning"] is None
    reset = Runtime.open(tuned_settings, load_reranker=False)
    assert reset.snapshot.tuning is None and reset.snapshot.bm25_params == BM25Params()
    reset.close()


def test_a_leg_weighted_zero_is_not_run(beir: Path, tuned_settings: Settings) -> None:
    tuning = CollectionTuning(
        BM25Params(k1=1.5, b=0.75),
        FusionChoice(FusionMethod.RRF, {"bm25": 1.0, "dense": 0.0}, 60, "bm25 alone, by hand"),
        "a test",
        "",
    )
    ingestor, store = make_ingestor(tuned_settings)
    ingestor.retune(tuning.to_json())
    store.close()
    runtime = Runtime.open(tuned_settings, load_reranker=False)
    try:
        assert runtime.snapshot.bm25.params == BM25Params(k1=1.5, b=0.75)
        fusion = runtime.snapshot.tuned_fusion
        plan = plan_for(PipelineName.HYBRID, tuned_settings, reranker_available=False, fusion=fusion)
        assert plan.retrievers == ("bm25",) and plan.fusion_reason == "bm25 alone, by hand"
        assert plan_for(
            PipelineName.DENSE, tuned_settings, reranker_available=False, fusion=fusion
        ).retrievers == ("dense",)
        outcome = runtime.pipeline.search("w1 w2", plan)
        assert "embed" not in outcome.timings_ms and outcome.hits
    finally:
        runtime.close()


def test_pseudo_queries_alter_their_documents_in_the_tuning_corpus(
    beir: Path, tuned_settings: Settings
) -> None:
    runtime = Runtime.open(tuned_settings, load_reranker=False)
    try:
        queries = pseudo_queries(runtime, 12, seed=4)
        kinds = {k: queries.kinds.count(k) for k in set(queries.kinds)}
        assert len(queries.qids) == 12 and set(kinds) == {"keywords", "title", "sentence", "passage"}
        assert queries.source == "pseudo-queries: " + ", ".join(
            f"{kinds[k]} {k}" for k in ("keywords", "title", "sentence", "passage")
        )
        run = TuningRun.prepare(runtime, queries, np.random.default_rng(0))
        vocab = runtime.snapshot.terms.term_ids
        analyzer = runtime.snapshot.analyzer
        for key, query in queries.altered.items():
            if query.kind == "title":
                continue
            row = run.corpus.doc_ids.index(key)
            rows = np.flatnonzero(run.corpus.row_doc == row)
            held = set(run.corpus.tf[rows].indices.tolist())
            first = runtime.snapshot.first_chunks[key]
            rest = first.title + " " + first.text.replace(query.removed, " ")
            piece_only = {vocab[t] for t in analyzer.tokens(query.removed)} - {
                vocab[t] for t in analyzer.tokens(rest)
            }
            assert piece_only
            assert not (piece_only & held)  # terms only the piece had are gone from its document's rows
            # ... but the document keeps its length (a padding term no query has), for BM25's normalisation
            assert run.corpus.tf[rows].sum() == runtime.snapshot.terms.tf[rows].sum()
        result = run_tune(
            tuned_settings, data=None, split="", pseudo=12, seed=4, publish=False, progress=False
        )
        assert result["published"] is None and result["evidence"]["kinds"] == kinds
    finally:
        runtime.close()
