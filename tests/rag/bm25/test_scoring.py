import math

import numpy as np
import pytest
import scipy.sparse as sp

from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.bm25.scoring import idf_lucene, idf_okapi, length_norm, saturate, top_k, weight_matrix
from rag.text.analyzer import Analyzer


def test_idf_lucene_is_positive_and_decreasing() -> None:
    values = idf_lucene(np.array([1, 5, 9, 10]), 10)
    assert (values > 0).all() and (np.diff(values) < 0).all()
    assert values[0] == pytest.approx(math.log(1 + (10 - 1 + 0.5) / 1.5))


def test_idf_okapi_floors_negative_values_like_rank_bm25() -> None:
    df = np.array([1, 2, 8, 0])  # the last term occurs nowhere (e.g. all its documents were deleted)
    values = idf_okapi(df, 10, epsilon=0.25)
    raw = [math.log(10 - d + 0.5) - math.log(d + 0.5) for d in (1, 2, 8)]
    floor = 0.25 * sum(raw) / 3
    assert values[:3] == pytest.approx([raw[0], raw[1], floor])
    assert values[3] == 0


def test_saturation_and_length_norm() -> None:
    norm = length_norm(np.array([5, 10, 20]), 10.0, 0.75)
    assert norm == pytest.approx([0.625, 1.0, 1.75])
    assert saturate(np.array([1.0]), np.array([1.0]), 1.2)[0] == pytest.approx(1.0)
    assert length_norm(np.array([3]), 0.0, 0.75)[0] == 1.0


def test_weight_matrix_matches_formula_per_cell() -> None:
    tf = sp.csr_matrix(np.array([[2, 0, 1], [0, 1, 1], [1, 1, 0]], dtype=np.int32))
    w = weight_matrix(tf, k1=1.2, b=0.75, variant="lucene").toarray()  # terms x docs
    dl = np.array([3, 2, 2])
    avg = dl.mean()
    df = np.array([2, 2, 2])
    for d in range(3):
        for t in range(3):
            f = tf[d, t]
            expected = (
                0.0
                if f == 0
                else math.log1p((3 - df[t] + 0.5) / (df[t] + 0.5))
                * f
                * 2.2
                / (f + 1.2 * (1 - 0.75 + 0.75 * dl[d] / avg))
            )
            assert w[t, d] == pytest.approx(expected)


def test_top_k_breaks_ties_by_lower_index() -> None:
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert top_k(scores, 2).tolist() == [1, 2]
    assert top_k(scores, 10).tolist() == [1, 2, 4, 3, 0]
    assert top_k(scores, 2, candidates=np.array([0, 3, 4])).tolist() == [4, 3]
    assert top_k(scores, 0).tolist() == []


def test_term_matrix_append_and_select_keep_columns_stable() -> None:
    m = TermMatrix.empty().append([["a", "b", "a"], ["c"]])
    m2 = m.select(np.array([1])).append([["a", "d"]])
    assert m2.vocab == ["a", "b", "c", "d"]
    assert m2.tf.toarray().tolist() == [[0, 0, 1, 0], [1, 0, 0, 1]]
    assert m.tf.toarray().tolist() == [[2, 1, 0], [0, 0, 1]]  # the original is untouched


def test_term_matrix_round_trips_through_disk(tmp_path) -> None:
    m = TermMatrix.empty().append([["x", "y"], ["y", "y", "z"]])
    m.save(tmp_path)
    loaded = TermMatrix.load(tmp_path)
    assert loaded.vocab == m.vocab and (loaded.tf != m.tf).nnz == 0


def test_index_search_returns_only_matching_rows_best_first() -> None:
    analyzer = Analyzer()
    texts = ["cats chase mice", "dogs chase cats", "birds sing", "cat cat cat"]
    index = BM25Index(TermMatrix.empty().append([analyzer.tokens(t) for t in texts]), analyzer)
    hits = index.search("cats", 10)
    assert [row for row, _ in hits] == [3, 0, 1]
    assert index.search("unknownword", 10) == []


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="k1 must be greater than 0"):
        BM25Params(k1=0)
    with pytest.raises(ValueError, match=r"b must be in \[0, 1\]"):
        BM25Params(b=1.5)
