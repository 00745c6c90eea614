"""Comparison suite: the sparse-matrix BM25 against rank-bm25 (the reference), same analyzer and parameters.

Parity holds for the ``okapi`` IDF variant, which reproduces rank-bm25's ``BM25Okapi`` IDF (including its
epsilon floor for terms in more than half of the documents). The default ``lucene`` variant differs from it
on purpose (it never goes negative), so it is not expected to match rank-bm25.
"""

import json

import numpy as np
import pytest
from rank_bm25 import BM25Okapi

from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.text.analyzer import Analyzer
from tests.conftest import DEMO

pytestmark = pytest.mark.comparison


def load_demo() -> tuple[list[str], list[str]]:
    docs = [json.loads(line) for line in (DEMO / "corpus.jsonl").read_text().splitlines()]
    queries = [json.loads(line)["text"] for line in (DEMO / "queries.jsonl").read_text().splitlines()]
    return [f"{d['title']}\n{d['text']}" for d in docs], queries


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (1.2, 1.0)])
def test_top10_identical_to_rank_bm25(k1: float, b: float) -> None:
    texts, queries = load_demo()
    analyzer = Analyzer()
    tokenized = [analyzer.tokens(t) for t in texts]
    # extra queries made of document words, so common (floored-IDF) terms are exercised too
    rng = np.random.default_rng(7)
    queries += [" ".join(rng.choice(tokenized[i], size=min(6, len(tokenized[i])))) for i in range(0, 400, 7)]
    ours = BM25Index(TermMatrix.empty().append(tokenized), analyzer, BM25Params(k1=k1, b=b, idf="okapi"))
    reference = BM25Okapi(tokenized, k1=k1, b=b, epsilon=0.25)
    compared = 0
    for query in queries:
        tokens = analyzer.tokens(query)
        expected_scores = reference.get_scores(tokens)
        np.testing.assert_allclose(ours.scores(tokens), expected_scores, rtol=1e-9, atol=1e-9)
        expected = [int(i) for i in np.lexsort((np.arange(len(texts)), -expected_scores))[:10]]
        expected = [i for i in expected if expected_scores[i] > 0]
        assert [row for row, _ in ours.search(query, 10)] == expected, query
        compared += 1
    assert compared > 80
