"""SparseBM25Retriever (BM25 from the store's lexical sparse vectors) answers as BM25Retriever (the term
matrix in process): same documents, scores and best chunks, with and without filters, when one document has
many chunks, and when the collection holds points the version does not use. Real edge engine, temp folder."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.bm25.index import TermMatrix
from rag.bm25.sparse import SparseEncoder, mean_length
from rag.dense.edge_store import EdgeStore
from rag.dense.store import SparseVector
from rag.index.snapshot import ChunkRecord, IndexSnapshot
from rag.retrieval.filters import SearchFilter, row_mask
from rag.retrieval.retrievers import BM25Retriever, SparseBM25Retriever, best_chunk_per_doc
from rag.text.analyzer import Analyzer
from rag.types import Hit
from tests.conftest import DEMO

DIM = 8
TENANTS = ("acme", "globex", "")


def demo_chunks() -> list[ChunkRecord]:
    """The demo corpus split into sentences (several chunks per document), three tenants, two languages,
    plus one document of many chunks that all match "mice" (of different lengths: no tied scores, which
    either retriever may break its own way)."""
    chunks = []
    for n, line in enumerate((DEMO / "corpus.jsonl").read_text().splitlines()):
        doc = json.loads(line)
        for i, sentence in enumerate(s for s in doc["text"].split(". ") if s):
            chunks.append(
                ChunkRecord(
                    f"{doc['_id']}#{i}",
                    doc["_id"],
                    i,
                    doc["title"],
                    sentence,
                    str(uuid.uuid5(uuid.NAMESPACE_URL, f"{doc['_id']}#{i}")),
                    {"lang": ("en", "fr")[n % 2]},
                    TENANTS[n % 3],
                )
            )
    for i in range(30):
        chunks.append(
            ChunkRecord(
                f"mice#{i}",
                "mice",
                i,
                "Mice",
                "mice mice" + " note" * i,
                str(uuid.uuid5(uuid.NAMESPACE_URL, f"mice#{i}")),
                {"lang": "en"},
                "acme",
            )
        )
    return chunks


def build(tmp: Path, chunks: list[ChunkRecord], extra: int = 0) -> tuple[IndexSnapshot, EdgeStore]:
    """The snapshot of ``chunks`` and a lexical edge store holding them, plus ``extra`` copies of the first
    chunks under point ids no version uses (stale points)."""
    analyzer = Analyzer()
    tokens = [analyzer.tokens(c.passage) for c in chunks]
    snapshot = IndexSnapshot("v1", {}, chunks, TermMatrix.empty().append(tokens), None, analyzer)
    encoder = SparseEncoder(snapshot.bm25_params, mean_length(tokens))
    sparse = encoder.documents(tokens) + encoder.documents(tokens[:extra])
    ids = [c.point_id for c in chunks] + [
        str(uuid.uuid5(uuid.NAMESPACE_URL, f"stale-{i}")) for i in range(extra)
    ]
    all_chunks = chunks + chunks[:extra]
    store = EdgeStore(tmp / "edge", lexical=True)
    store.ensure_collection(DIM)
    vectors = np.random.default_rng(0).standard_normal((len(ids), DIM)).astype(np.float32)
    payloads = [
        {"chunk_id": c.chunk_id, "doc_id": c.doc_id, "tenant": c.tenant, "metadata": c.metadata}
        for c in all_chunks
    ]
    store.upsert(ids, vectors, payloads, sparse)
    store.optimize()
    return snapshot, store


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IndexSnapshot, EdgeStore]]:
    snapshot, store = build(tmp_path_factory.mktemp("sparse"), demo_chunks())
    yield snapshot, store
    store.close()


def queries() -> list[str]:
    texts = [json.loads(line)["text"] for line in (DEMO / "queries.jsonl").read_text().splitlines()]
    return [*texts, "mice", "mice hunt cats"]


def assert_same(got: list[Hit], want: list[Hit]) -> None:
    assert [(h.doc_id, h.chunk_id) for h in got] == [(h.doc_id, h.chunk_id) for h in want]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in want], rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 10, 100])
def test_answers_as_the_in_process_bm25(index: tuple[IndexSnapshot, EdgeStore], k: int) -> None:
    snapshot, store = index
    sparse, bm25 = SparseBM25Retriever(snapshot, store), BM25Retriever(snapshot)
    for query in queries():
        assert_same(sparse.retrieve(query, k), bm25.retrieve(query, k))
    assert sparse.retrieve("zzzunknown", 10) == [] and sparse.retrieve("", 10) == []


@pytest.mark.parametrize(
    "flt",
    [SearchFilter("acme"), SearchFilter("globex"), SearchFilter.of(None, {"lang": "fr"}), SearchFilter()],
)
def test_filters_answer_as_the_in_process_bm25(
    index: tuple[IndexSnapshot, EdgeStore], flt: SearchFilter
) -> None:
    snapshot, store = index
    sparse, bm25 = SparseBM25Retriever(snapshot, store), BM25Retriever(snapshot)
    mask = row_mask(snapshot, flt)
    for query in queries():
        want = bm25.retrieve(query, 10, mask=mask)
        assert_same(sparse.retrieve(query, 10, mask=mask, flt=flt), want)  # filtered in Qdrant
        assert_same(sparse.retrieve(query, 10, mask=mask), want)  # the mask alone: more fetches


def test_points_the_version_does_not_use_are_fetched_past(tmp_path: Path) -> None:
    chunks = demo_chunks()
    snapshot, store = build(tmp_path, chunks, extra=len(chunks) // 2)
    try:
        everything = store.search_sparse(SparseEncoder.query(["mice"]), limit=10 * len(chunks))
        rows = np.asarray([snapshot.point_rows[p] for p, _ in everything if p in snapshot.point_rows])
        scores = np.asarray([s for p, s in everything if p in snapshot.point_rows])
        doc_scores, _ = best_chunk_per_doc(rows, scores, snapshot.chunk_doc, snapshot.n_docs)
        want = [
            snapshot.doc_ids[d] for d in np.argsort(-doc_scores, kind="stable") if np.isfinite(doc_scores[d])
        ]
        for stale_points in (0, len(chunks) // 2):
            hits = SparseBM25Retriever(snapshot, store, stale_points=stale_points).retrieve("mice", 5)
            assert [h.doc_id for h in hits] == want[:5]
    finally:
        store.close()


def test_needs_a_lexical_store(tmp_path: Path) -> None:
    snapshot = IndexSnapshot("v1", {}, [], TermMatrix.empty(), None, Analyzer())
    store = EdgeStore(tmp_path / "plain")
    with pytest.raises(ValueError, match="no lexical sparse vector"):
        SparseBM25Retriever(snapshot, store)
    store.close()
    assert SparseVector([], []) == SparseEncoder.query([])
