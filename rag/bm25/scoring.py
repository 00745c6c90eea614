"""BM25 math as small pure functions over numpy / scipy.sparse arrays."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp

IdfVariant = Literal["lucene", "okapi"]


def idf_lucene(df: np.ndarray, n_docs: int) -> np.ndarray:
    """Lucene's IDF, ``log(1 + (N - df + 0.5) / (df + 0.5))``: always positive."""
    df = df.astype(np.float64)
    return np.log1p((n_docs - df + 0.5) / (df + 0.5))


def idf_okapi(df: np.ndarray, n_docs: int, epsilon: float = 0.25) -> np.ndarray:
    """rank-bm25's ``BM25Okapi`` IDF: ``log((N - df + 0.5) / (df + 0.5))``.

    Negative values (terms in more than half the documents) are replaced by ``epsilon`` times the
    mean IDF over the terms that occur at all, exactly as rank-bm25 does.
    """
    present = df > 0
    raw = np.zeros(df.shape, dtype=np.float64)
    dfp = df[present].astype(np.float64)
    raw[present] = np.log(n_docs - dfp + 0.5) - np.log(dfp + 0.5)
    if not present.any():
        return raw
    floor = epsilon * raw[present].mean()
    return np.where(present & (raw < 0), floor, raw)


def idf(df: np.ndarray, n_docs: int, variant: IdfVariant, epsilon: float = 0.25) -> np.ndarray:
    variants = {"lucene": lambda: idf_lucene(df, n_docs), "okapi": lambda: idf_okapi(df, n_docs, epsilon)}
    if variant not in variants:
        raise ValueError(f"idf variant must be one of {sorted(variants)}, got {variant!r}")
    return variants[variant]()


def length_norm(doc_len: np.ndarray, avgdl: float, b: float) -> np.ndarray:
    """Per-document ``1 - b + b * |d| / avgdl``."""
    if avgdl <= 0:
        return np.ones(doc_len.shape, dtype=np.float64)
    return 1.0 - b + b * doc_len.astype(np.float64) / avgdl


def saturate(tf: np.ndarray, norm: np.ndarray, k1: float) -> np.ndarray:
    """Term-frequency saturation ``tf (k1 + 1) / (tf + k1 * norm)``."""
    return tf * (k1 + 1.0) / (tf + k1 * norm)


def document_frequencies(tf: sp.csr_matrix) -> np.ndarray:
    """Number of rows (documents) in which each column (term) occurs."""
    return np.bincount(tf.indices, minlength=tf.shape[1])


def weight_matrix(
    tf: sp.csr_matrix, *, k1: float, b: float, variant: IdfVariant, epsilon: float = 0.25
) -> sp.csr_matrix:
    """Term-major (terms x docs) matrix of BM25 contributions; a query's scores are a sum of its rows."""
    n_docs = tf.shape[0]
    doc_len = np.asarray(tf.sum(axis=1)).ravel()
    avgdl = float(doc_len.mean()) if n_docs else 0.0
    norm = length_norm(doc_len, avgdl, b)
    rows = np.repeat(np.arange(n_docs), np.diff(tf.indptr))
    term_idf = idf(document_frequencies(tf), n_docs, variant, epsilon)
    data = saturate(tf.data.astype(np.float64), norm[rows], k1) * term_idf[tf.indices]
    weights = sp.csr_matrix((data, tf.indices, tf.indptr), shape=tf.shape)
    return weights.T.tocsr()


def score_terms(weights: sp.csr_matrix, term_ids: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Dense score vector over documents: ``sum_t count_t * weights[t]`` (a query term repeated counts twice,
    as in rank-bm25)."""
    scores = np.zeros(weights.shape[1], dtype=np.float64)
    indptr, indices, data = weights.indptr, weights.indices, weights.data
    for term, count in zip(term_ids.tolist(), counts.tolist(), strict=True):
        lo, hi = indptr[term], indptr[term + 1]
        scores[indices[lo:hi]] += count * data[lo:hi]
    return scores


def top_k(scores: np.ndarray, k: int, *, candidates: np.ndarray | None = None) -> np.ndarray:
    """Indices of the ``k`` largest scores, best first; ties broken by lower index (stable, deterministic).

    ``candidates`` restricts the search to those indices (e.g. only documents that matched a term).
    """
    idx = np.arange(scores.shape[0]) if candidates is None else candidates
    if k <= 0 or idx.size == 0:
        return np.empty(0, dtype=np.int64)
    vals = scores[idx]
    if idx.size > k:
        # keep everything tied with the k-th value so the tie-break below is exact
        kth = np.partition(vals, idx.size - k)[idx.size - k]
        keep = vals >= kth
        idx, vals = idx[keep], vals[keep]
    order = np.lexsort((idx, -vals))
    return idx[order][:k]
