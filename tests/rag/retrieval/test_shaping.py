"""Result shaping: MMR diversity (off = unchanged; on = near-duplicates pushed down), group_by doc
(chunk counts), the min_score floor; through the real snapshot of a small index."""

from __future__ import annotations

import numpy as np
import pytest

from rag.config import Settings
from rag.retrieval.filters import SearchFilter
from rag.retrieval.plan import PipelineName, plan_for
from rag.retrieval.shaping import (
    MAX_POOL,
    GroupBy,
    ResultShape,
    ShapeError,
    at_least,
    diversify,
    mmr_order,
    pool_size,
    similarities,
)
from rag.runtime import Runtime
from rag.types import Document, Evidence, Result
from tests.conftest import make_ingestor

MOUSE = "Cats are small carnivorous mammals that purr and hunt mice in barns."
# three copies of one finding (different ids), then two other documents about the query
DOCS = [
    Document("cat-a", MOUSE, "Cat"),
    Document("cat-b", MOUSE, "Cat"),
    Document("cat-c", MOUSE, "Cat"),
    Document("owl", "Owls are nocturnal birds of prey that hunt mice at night with silent flight.", "Owl"),
    Document("snake", "Snakes are legless reptiles; many hunt mice and swallow them whole.", "Snake"),
    Document("bee", "Bees are flying insects that pollinate flowers and make honey.", "Bee"),
    Document(
        "long",
        " ".join(
            f"Mice paragraph {i} about rodents, barns and the animals that hunt mice." for i in range(60)
        ),
        "Long",
    ),
]


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    settings = settings.model_copy(update={"chunk_words": 40, "chunk_overlap_words": 5})
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(DOCS)
    store.close()
    return Runtime.open(settings, load_reranker=False)


def _hits(runtime: Runtime, query: str) -> list:  # type: ignore[type-arg]
    plan = plan_for(PipelineName.BM25, runtime.settings, top_k=7, reranker_available=False)
    return runtime.pipeline.search(query, plan, SearchFilter(None)).hits


def _text_of(runtime: Runtime, hits: list) -> list[str]:  # type: ignore[type-arg]
    return [runtime.snapshot.chunk(h.chunk_id).text for h in hits]


def test_diversity_zero_is_the_ranking_unchanged(runtime: Runtime) -> None:
    hits = _hits(runtime, "cats hunt mice")
    assert diversify(runtime.snapshot, hits, 0.0, 3, 100) is hits
    sim = np.eye(5)
    assert mmr_order(sim, 0.0, 5) == [0, 1, 2, 3, 4]


def test_mmr_pushes_near_duplicates_down_and_never_loses_a_distinct_text(runtime: Runtime) -> None:
    hits = _hits(runtime, "cats purr hunt mice barns")
    top = 3
    before = _text_of(runtime, hits[:top])
    assert len(set(before)) == 1, "the three copies lead the plain ranking (the constructed case)"
    for diversity in (0.3, 0.5, 0.7, 1.0):
        shaped = diversify(runtime.snapshot, hits, diversity, top, 100)
        after = _text_of(runtime, shaped[:top])
        assert len(set(after)) >= len(set(before))
        assert shaped[0] == hits[0]  # the best stays first
        assert sorted(h.doc_id for h in shaped) == sorted(h.doc_id for h in hits)  # a re-ordering only
    assert len(set(_text_of(runtime, diversify(runtime.snapshot, hits, 0.5, top, 100)[:top]))) == 3


def test_mmr_work_is_bounded() -> None:
    assert pool_size(10, 100) == 30 and pool_size(100, 1000) == MAX_POOL and pool_size(10, 10) == 10


def test_group_by_doc_counts_the_documents_chunks(runtime: Runtime) -> None:
    plan = plan_for(PipelineName.BM25, runtime.settings, top_k=7, reranker_available=False)
    outcome = runtime.pipeline.search("rodents in barns", plan, SearchFilter(None))
    grouped = runtime.pipeline.results(outcome.hits, 7, group_by=GroupBy.DOC)
    plain = runtime.pipeline.results(outcome.hits, 7)
    assert [(r.doc_id, r.chunk_id, r.score) for r in grouped] == [
        (r.doc_id, r.chunk_id, r.score) for r in plain
    ]
    chunks = {r.doc_id: r.chunks for r in grouped}
    expected = sum(1 for c in runtime.snapshot.chunks if c.doc_id == "long")
    assert expected > 1 and chunks["long"] == expected
    assert all(n == 1 for d, n in chunks.items() if d != "long")
    assert all(r.chunks is None for r in plain)


def _result(doc: str, confidence: float | None) -> Result:
    return Result(doc, 1.0, 1, "", "", f"{doc}#0", {}, Evidence(confidence=confidence))


def test_min_score_keeps_the_confident_and_abstains_with_a_reason_when_none_is() -> None:
    results = [_result("a", 0.8), _result("b", 0.3), _result("c", None)]
    assert at_least(results, None) == (results, None)
    assert at_least(results, 0.0)[0] == results[:2]  # no confidence: fails closed
    kept, why = at_least(results, 0.5)
    assert [r.doc_id for r in kept] == ["a"] and why is None
    kept, why = at_least(results, 0.9)
    assert kept == [] and why is not None
    assert why.min_score == 0.9 and why.best == 0.8 and "0.9" in why.reason
    kept, why = at_least([_result("c", None)], 0.1)
    assert kept == [] and why is not None and why.best is None
    assert at_least([], 0.5) == ([], None)  # nothing found is not an abstention


def test_shape_fields_are_checked_and_the_default_adds_nothing_to_the_cache_key() -> None:
    assert ResultShape().key_params() == {}
    assert ResultShape(GroupBy.DOC).key_params() == {"shape": {"group_by": "doc", "diversity": 0.0}}
    with pytest.raises(ShapeError, match=r"diversity: must be in \[0, 1\]") as err:
        ResultShape(diversity=1.5)
    assert err.value.field == "diversity"
    with pytest.raises(ShapeError, match="group_by") as err2:
        GroupBy.from_str("chunk")
    assert err2.value.field == "group_by"


def test_similarities_are_the_tfidf_cosines_of_a_naive_computation(runtime: Runtime) -> None:
    snapshot = runtime.snapshot
    hits = _hits(runtime, "mice barns hunt")
    tf = snapshot.terms.tf.toarray().astype(float)
    df = (tf > 0).sum(axis=0)
    idf = np.log1p((tf.shape[0] - df + 0.5) / (df + 0.5))
    rows = np.array([snapshot.chunk_rows[h.chunk_id] for h in hits])
    x = np.where(tf[rows] > 0, 1.0 + np.log(np.maximum(tf[rows], 1.0)), 0.0) * idf
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.testing.assert_allclose(similarities(snapshot, hits), x @ x.T, atol=1e-12)
