"""BM25 as sparse vectors (rag.bm25.sparse): the dot product of a chunk's and a query's vector, with Lucene's
IDF applied to the query side as Qdrant's IDF modifier does, is our BM25 score — checked in numpy here,
against the engines in tests/contract/test_vector_store.py."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.bm25.scoring import idf_lucene
from rag.bm25.sparse import TERM_IDS, SparseEncoder, mean_length, term_id
from rag.dense.store import SparseVector
from rag.text.analyzer import Analyzer
from tests.conftest import DEMO


def idf_dot(doc: SparseVector, query: SparseVector, df: dict[int, int], n: int) -> float:
    """What Qdrant computes: sum over shared ids of query value x IDF(df, N) x document value."""
    weights = dict(zip(doc.indices, doc.values, strict=True))
    return sum(
        q * float(idf_lucene(np.asarray([df[i]]), n)[0]) * weights[i]
        for i, q in zip(query.indices, query.values, strict=True)
        if i in weights
    )


@pytest.mark.parametrize("params", [BM25Params(), BM25Params(k1=1.5, b=0.75), BM25Params(k1=1.2, b=0.0)])
def test_the_idf_dot_product_is_our_bm25_on_the_demo_corpus(params: BM25Params) -> None:
    analyzer = Analyzer()
    docs = [json.loads(line) for line in (DEMO / "corpus.jsonl").read_text().splitlines()]
    tokens = [analyzer.tokens(f"{d['title']}\n{d['text']}") for d in docs]
    queries = [json.loads(line)["text"] for line in (DEMO / "queries.jsonl").read_text().splitlines()]
    index = BM25Index(TermMatrix.empty().append(tokens), analyzer, params)
    encoder = SparseEncoder(params, mean_length(tokens))
    vectors = encoder.documents(tokens)
    df: dict[int, int] = {}
    for v in vectors:
        for i in v.indices:
            df[i] = df.get(i, 0) + 1
    for text in [*queries, "cells cells cells"]:  # a repeated term counts as often as it occurs
        q_tokens = analyzer.tokens(text)
        query = SparseEncoder.query(q_tokens)
        got = [idf_dot(v, query, df, len(vectors)) for v in vectors]
        np.testing.assert_allclose(got, index.scores(q_tokens), rtol=1e-9, atol=1e-12)


def test_document_and_query_vectors() -> None:
    encoder = SparseEncoder(BM25Params(k1=1.0, b=0.5), avgdl=4.0)
    doc = encoder.document(["cat", "mouse", "cat", "hunt"])  # |d| = 4 = avgdl: norm 1
    assert doc.indices == sorted(doc.indices)
    weights = dict(zip(doc.indices, doc.values, strict=True))
    assert weights[term_id("cat")] == pytest.approx(2 * 2 / (2 + 1))  # tf (k1+1) / (tf + k1)
    assert weights[term_id("mouse")] == pytest.approx(1.0)
    long_doc = encoder.document(["cat"] + ["x"] * 7)  # |d| = 8: norm 1.5
    assert dict(zip(*long_doc, strict=True))[term_id("cat")] == pytest.approx(2 / (1 + 1.5))
    query = SparseEncoder.query(["cat", "hunt", "cat"])
    assert dict(zip(*query, strict=True)) == {term_id("cat"): 2.0, term_id("hunt"): 1.0}
    assert encoder.document([]) == SparseVector([], []) == SparseEncoder.query([])
    assert SparseEncoder(BM25Params(), avgdl=0.0).document(["a"]).values == [1.0]  # no mean: no norm


def test_term_ids_are_stable_unsigned_32_bit_hashes() -> None:
    assert term_id("cat") == int.from_bytes(hashlib.blake2b(b"cat", digest_size=4).digest(), "little")
    assert term_id("cat") == 3_138_554_730  # pinned: a changed id would silently split an index
    assert all(0 <= term_id(t) < 2**32 for t in ("", "é", "x" * 1000))


def test_colliding_terms_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    import rag.bm25.sparse as sparse

    monkeypatch.setattr(sparse, "term_id", lambda term: 7 if term in ("a", "b") else 9)
    encoder = SparseEncoder(BM25Params(k1=1.0, b=0.0), avgdl=3.0)
    assert encoder.document(["a", "b", "c"]) == SparseVector([7, 9], [2 * 2 / 3, 1.0])
    assert SparseEncoder.query(["a", "b"]) == SparseVector([7], [2.0])


def test_refuses_what_qdrant_cannot_compute() -> None:
    with pytest.raises(ValueError, match="'lucene' IDF only"):
        SparseEncoder(BM25Params(idf="okapi"), avgdl=10.0)
    with pytest.raises(ValueError, match="avgdl must be at least 0"):
        SparseEncoder(BM25Params(), avgdl=-1.0)
    assert mean_length([]) == 0.0 and mean_length([["a"], ["a", "b", "c"]]) == 2.0


def test_the_record_brings_back_the_encoder_the_vectors_were_written_with() -> None:
    encoder = SparseEncoder(BM25Params(k1=1.1, b=0.3), avgdl=42.5)
    record = json.loads(json.dumps(encoder.record()))  # as a manifest keeps it
    assert record["term_ids"] == TERM_IDS
    assert SparseEncoder.from_record(record, BM25Params(k1=1.1, b=0.3)) == encoder
    with pytest.raises(ValueError, match=r"k1=1.1, b=0.3.*k1=0.9, b=0.4.*re-ingest"):
        SparseEncoder.from_record(record, BM25Params())
    with pytest.raises(ValueError, match="term ids 'crc32'"):
        SparseEncoder.from_record({**record, "term_ids": "crc32"}, BM25Params(k1=1.1, b=0.3))
