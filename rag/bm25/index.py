"""Sparse-matrix BM25 index over chunks, with term statistics that survive incremental updates."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from rag.bm25.scoring import IdfVariant, score_terms, top_k, weight_matrix
from rag.text.analyzer import Analyzer


@dataclass(frozen=True, slots=True)
class BM25Params:
    k1: float = 0.9
    b: float = 0.4
    idf: IdfVariant = "lucene"
    epsilon: float = 0.25

    def __post_init__(self) -> None:
        if self.k1 <= 0:
            raise ValueError(f"k1 must be greater than 0, got {self.k1}")
        if not 0 <= self.b <= 1:
            raise ValueError(f"b must be in [0, 1], got {self.b}")


class TermMatrix:
    """Rows = chunks, columns = vocabulary terms, values = term counts. Vocabulary only grows, so the
    column of a term never changes and rows can be kept across index versions without re-analysis."""

    def __init__(self, tf: sp.csr_matrix, vocab: list[str]) -> None:
        if tf.shape[1] != len(vocab):
            raise ValueError(f"tf has {tf.shape[1]} columns but vocab has {len(vocab)} terms")
        self.tf = tf
        self.vocab = vocab
        self.term_ids = {t: i for i, t in enumerate(vocab)}

    @classmethod
    def empty(cls) -> TermMatrix:
        return cls(sp.csr_matrix((0, 0), dtype=np.int32), [])

    def append(self, token_lists: Sequence[Sequence[str]]) -> TermMatrix:
        """A new matrix with one row per token list appended; new terms extend the vocabulary."""
        vocab = list(self.vocab)
        term_ids = dict(self.term_ids)
        indptr, indices, data = [0], [], []
        for tokens in token_lists:
            for term, count in Counter(tokens).items():
                tid = term_ids.get(term)
                if tid is None:
                    tid = term_ids[term] = len(vocab)
                    vocab.append(term)
                indices.append(tid)
                data.append(count)
            indptr.append(len(indices))
        new_rows = sp.csr_matrix(
            (np.asarray(data, dtype=np.int32), np.asarray(indices, dtype=np.int32), np.asarray(indptr)),
            shape=(len(token_lists), len(vocab)),
        )
        old = self.tf.copy()
        old.resize((self.tf.shape[0], len(vocab)))
        return TermMatrix(sp.vstack([old, new_rows], format="csr"), vocab)

    def select(self, rows: np.ndarray) -> TermMatrix:
        return TermMatrix(self.tf[rows], self.vocab)

    def save(self, directory: Path) -> None:
        np.savez(
            directory / "bm25_tf.npz",
            data=self.tf.data,
            indices=self.tf.indices,
            indptr=self.tf.indptr,
            shape=np.asarray(self.tf.shape),
        )
        (directory / "bm25_vocab.json").write_text(json.dumps(self.vocab, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> TermMatrix:
        arrays = np.load(directory / "bm25_tf.npz")
        tf = sp.csr_matrix(
            (arrays["data"], arrays["indices"], arrays["indptr"]), shape=tuple(arrays["shape"].tolist())
        )
        return cls(tf, json.loads((directory / "bm25_vocab.json").read_text()))


class BM25Index:
    """BM25 over the rows of a :class:`TermMatrix`. Scoring is one sparse row-sum per query term."""

    def __init__(self, terms: TermMatrix, analyzer: Analyzer, params: BM25Params | None = None) -> None:
        self.terms = terms
        self.analyzer = analyzer
        self.params = params or BM25Params()
        self.weights = weight_matrix(
            terms.tf, k1=self.params.k1, b=self.params.b, variant=self.params.idf, epsilon=self.params.epsilon
        )

    @property
    def size(self) -> int:
        return int(self.terms.tf.shape[0])

    def query_terms(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Known term ids of a token list and how often each occurs; unknown terms score nothing."""
        counts = Counter(t for t in tokens if t in self.terms.term_ids)
        ids = np.fromiter((self.terms.term_ids[t] for t in counts), dtype=np.int64, count=len(counts))
        return ids, np.fromiter(counts.values(), dtype=np.float64, count=len(counts))

    def scores(self, tokens: Sequence[str]) -> np.ndarray:
        """BM25 score of every row for an already analysed query."""
        ids, counts = self.query_terms(tokens)
        return score_terms(self.weights, ids, counts)

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(row, score) of the ``k`` best rows that match at least one query term."""
        scores = self.scores(self.analyzer.tokens(query))
        matched = np.flatnonzero(scores)
        return [(int(i), float(scores[i])) for i in top_k(scores, k, candidates=matched)]
