"""Max-pooling chunk scores into document hits over only the rows that decide the top k (against pooling
every matched row: the same documents, scores and best chunks, ties included)."""

from __future__ import annotations

import numpy as np
import pytest

from rag.bm25.scoring import top_k
from rag.retrieval.retrievers import best_chunk_per_doc, deciding_rows


def pooled_top(rows: np.ndarray, scores: np.ndarray, chunk_doc: np.ndarray, n_docs: int, k: int) -> list:
    doc_scores, best = best_chunk_per_doc(rows, scores, chunk_doc, n_docs)
    present = np.flatnonzero(best >= 0)
    return [(int(d), float(doc_scores[d]), int(best[d])) for d in top_k(doc_scores, k, candidates=present)]


@pytest.mark.parametrize("seed", range(40))
def test_deciding_rows_pool_to_the_same_top_k(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_docs = int(rng.integers(1, 400))
    chunk_doc = np.sort(rng.integers(0, n_docs, int(rng.integers(1, 3000))))  # 1..many chunks per doc
    # coarse scores: many ties, across documents and within one
    scores_all = rng.integers(0, int(rng.integers(2, 30)), chunk_doc.size).astype(np.float64)
    rows = np.flatnonzero(scores_all)
    scores = scores_all[rows]
    for k in (1, 3, 10, 100, 1000):
        kept_rows, kept_scores = deciding_rows(rows, scores, chunk_doc, k)
        assert np.all(np.diff(kept_rows) > 0)  # still ascending
        assert pooled_top(kept_rows, kept_scores, chunk_doc, n_docs, k) == pooled_top(
            rows, scores, chunk_doc, n_docs, k
        )


def test_a_common_word_query_pools_a_few_rows() -> None:
    chunk_doc = np.arange(100_000)
    scores = np.random.default_rng(0).random(100_000)
    rows, kept = deciding_rows(np.arange(100_000), scores, chunk_doc, 10)
    assert len(rows) == 40 and kept.min() >= np.sort(scores)[-40]
