"""BM25 and dense retrievers over one index snapshot; all return document-level hits (best chunk wins).

BM25 has two engines behind one interface: :class:`BM25Retriever` scores the snapshot's term matrix in
process (embedded mode, where it is faster), :class:`SparseBM25Retriever` asks the vector store's
``lexical`` sparse vectors (scaled out: a replica holds no term matrix). Same analyzer, same BM25 up to the
differences listed in :mod:`rag.bm25.sparse`.
"""

from __future__ import annotations

import numpy as np

from rag.bm25.scoring import top_k
from rag.bm25.sparse import SparseEncoder
from rag.dense.matryoshka import rotate
from rag.dense.store import VectorStore
from rag.index.snapshot import IndexSnapshot
from rag.retrieval.filters import SearchFilter, qdrant_filter
from rag.retrieval.multiquery import prf_scores
from rag.types import Hit


def best_chunk_per_doc(
    rows: np.ndarray, scores: np.ndarray, chunk_doc: np.ndarray, n_docs: int
) -> tuple[np.ndarray, np.ndarray]:
    """Max-pool chunk scores into document scores. Returns (doc score per doc, best row per doc), with
    ``-inf`` / ``-1`` for documents none of whose chunks are in ``rows``."""
    doc_scores = np.full(n_docs, -np.inf)
    best_row = np.full(n_docs, -1, dtype=np.int64)
    if rows.size == 0:
        return doc_scores, best_row
    order = np.lexsort((rows, -scores))  # best score first; ties: lower row first
    rows, scores = rows[order], scores[order]
    docs = chunk_doc[rows]
    _, first = np.unique(docs, return_index=True)
    doc_scores[docs[first]] = scores[first]
    best_row[docs[first]] = rows[first]
    return doc_scores, best_row


def deciding_rows(
    rows: np.ndarray, scores: np.ndarray, chunk_doc: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The rows (in their given order) that decide the top ``k`` documents of a max-pool: every row scoring
    at least the ``m``-th best score, for the smallest ``m`` in 4k, 16k, … whose rows cover ``k``
    documents. A document left out has every row below that score, which is at most the ``k``-th best
    document's, so max-pooling these rows ranks the top ``k`` exactly as max-pooling all of them (ties
    included) — at 100k chunks a common-word query matches nearly every row, and pooling all of them was
    80% of the BM25 time."""
    m = 4 * max(k, 1)
    while m < rows.size:
        kth = np.partition(scores, rows.size - m)[rows.size - m]
        take = scores >= kth
        if np.unique(chunk_doc[rows[take]]).size >= k:
            return rows[take], scores[take]
        m *= 4
    return rows, scores


def _served_rows(
    snapshot: IndexSnapshot, points: list[tuple[str, float]], mask: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """The rows (and scores) of the store's hits that this snapshot serves and ``mask`` allows: points of
    another version (stale, or not yet published here) are dropped."""
    rows, scores = [], []
    for pid, score in points:
        row = snapshot.point_rows.get(pid)
        if row is not None and (mask is None or mask[row]):
            rows.append(row)
            scores.append(score)
    return np.asarray(rows, dtype=np.int64), np.asarray(scores)


def _doc_hits(snapshot: IndexSnapshot, rows: np.ndarray, scores: np.ndarray, k: int) -> list[Hit]:
    rows, scores = deciding_rows(rows, scores, snapshot.chunk_doc, k)
    doc_scores, best_row = best_chunk_per_doc(rows, scores, snapshot.chunk_doc, snapshot.n_docs)
    present = np.flatnonzero(best_row >= 0)
    return [
        Hit(snapshot.doc_ids[d], float(doc_scores[d]), snapshot.chunks[best_row[d]].chunk_key)
        for d in top_k(doc_scores, k, candidates=present)
    ]


PRF_ORIGINAL_WEIGHT = 0.8  # chosen on SciFact train (benchmarks/results/multiquery.md)
MAX_OVERFETCH = 1000  # bound on extra points fetched to make up for stale ones (garbage-collected on publish)


class BM25Retriever:
    name = "bm25"

    def __init__(self, snapshot: IndexSnapshot) -> None:
        self.snapshot = snapshot

    def retrieve(self, query: str, k: int, *, mask: np.ndarray | None = None) -> list[Hit]:
        """Top ``k`` documents; ``mask`` (a row mask from :func:`rag.retrieval.filters.row_mask`) limits
        the search to the rows it marks."""
        scores = self.snapshot.bm25.scores(self.snapshot.analyzer.tokens(query))
        rows = np.flatnonzero(scores)
        if mask is not None:
            rows = rows[mask[rows]]
        return _doc_hits(self.snapshot, rows, scores[rows], k)

    def retrieve_prf(self, query: str, k: int, *, mask: np.ndarray | None = None) -> list[Hit]:
        """Top ``k`` documents for the query expanded by pseudo-relevance feedback (RM3, see
        :func:`rag.retrieval.multiquery.prf_scores`): feedback from the best documents the mask allows."""
        snapshot = self.snapshot
        scores = prf_scores(
            snapshot.bm25,
            snapshot.analyzer.tokens(query),
            original_weight=PRF_ORIGINAL_WEIGHT,
            mask=mask,
            chunk_doc=snapshot.chunk_doc,
        )
        rows = np.flatnonzero(scores)
        if mask is not None:
            rows = rows[mask[rows]]
        return _doc_hits(snapshot, rows, scores[rows], k)


class SparseBM25Retriever:
    """BM25 from the store's ``lexical`` sparse vectors (IDF applied by Qdrant), restricted to the points
    of the snapshot's version. Needs of the snapshot only its analyzer and chunk table (no term matrix).

    Ranks documents as :class:`BM25Retriever` does: it fetches the best chunks, 4k first, then four times
    more until they cover ``k`` documents of the version that the mask allows (or nothing is left), so the
    max-pooled top ``k`` is the one over every chunk (up to exact ties: Qdrant cuts its list inside a run of
    equal scores its own way, so another of a document's tied chunks may be named, or another of the
    documents tied at the ``k``-th place kept). ``flt`` (with ``mask``) also filters in Qdrant, which
    keeps the first fetch enough; a mask without ``flt`` is applied to the hits only (right, but a
    selective one costs more fetches). No pseudo-relevance feedback (``retrieve_prf``): RM3 needs the
    term statistics of the feedback chunks, which stay in Qdrant."""

    name = "bm25"

    def __init__(self, snapshot: IndexSnapshot, store: VectorStore, *, stale_points: int = 0) -> None:
        if not store.lexical:
            raise ValueError("the vector store has no lexical sparse vector: created with lexical=False?")
        self.snapshot = snapshot
        self.store = store
        # as DenseRetriever: points this version does not use, fetched on top so dropping them leaves k
        self._overfetch = min(stale_points, MAX_OVERFETCH)

    def retrieve(
        self, query: str, k: int, *, mask: np.ndarray | None = None, flt: SearchFilter | None = None
    ) -> list[Hit]:
        """Top ``k`` documents; ``mask`` (and ``flt``, see the class docstring) limit the search."""
        vector = SparseEncoder.query(self.snapshot.analyzer.tokens(query))
        if k < 1 or not vector.indices:
            return []
        payload_filter = (
            qdrant_filter(flt) if flt is not None and mask is not None and not mask.all() else None
        )
        limit = 4 * k + self._overfetch
        while True:
            points = self.store.search_sparse(vector, limit=limit, query_filter=payload_filter)
            found, scores = _served_rows(self.snapshot, points, mask)
            if len(points) < limit or np.unique(self.snapshot.chunk_doc[found]).size >= k:
                return _doc_hits(self.snapshot, found, scores, k)
            limit *= 4


class DenseRetriever:
    """Nearest chunks in Qdrant, restricted to the points of the snapshot's version."""

    name = "dense"

    def __init__(self, snapshot: IndexSnapshot, store: VectorStore, *, stale_points: int = 0) -> None:
        if snapshot.rotation is None:
            raise ValueError(f"version {snapshot.version!r} has no rotation; was it ingested with vectors?")
        self.snapshot = snapshot
        self.store = store
        # points in the collection that this version does not use (superseded or from an unfinished
        # ingest); fetched on top of k (and of the prefetch) so that dropping them still leaves k chunks
        self.stale_points = stale_points
        self._overfetch = min(stale_points, MAX_OVERFETCH)

    def rotate_query(self, query_vector: np.ndarray) -> np.ndarray:
        assert self.snapshot.rotation is not None
        rotated: np.ndarray = rotate(query_vector[None, :], self.snapshot.rotation)[0]
        return rotated

    def retrieve(
        self,
        query_vector: np.ndarray,
        k: int,
        *,
        dims: int | None = None,
        prefetch: int = 200,
        rescore: bool = True,
        flt: SearchFilter | None = None,
        mask: np.ndarray | None = None,
    ) -> list[Hit]:
        """``query_vector``: the normalised query embedding (un-rotated). ``k`` counts chunks fetched.
        ``flt`` and its ``mask`` restrict the search (Qdrant payload filter + a check of every hit)."""
        # a filter that passes every row of this version needs no payload filter (it is not free in
        # Qdrant local mode); foreign points are dropped by the row lookup below either way
        payload_filter = (
            qdrant_filter(flt) if flt is not None and mask is not None and not mask.all() else None
        )
        points = self.store.search(
            self.rotate_query(query_vector),
            limit=k + self._overfetch,
            dims=dims,
            prefetch=prefetch + self._overfetch,
            rescore=rescore,
            query_filter=payload_filter,
        )
        rows, scores = _served_rows(self.snapshot, points, mask)
        return _doc_hits(self.snapshot, rows, scores, k)
