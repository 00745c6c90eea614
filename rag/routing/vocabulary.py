"""A tenant's own vocabulary statistics, for the router's query features.

One index version holds every tenant's chunks, and its IDF (:meth:`rag.index.snapshot.IndexSnapshot.idf`)
counts them all: features computed from it (``unknown_terms``, ``rare_terms``, ``idf_*``, ``difficulty``)
would tell tenant A whether a word occurs in tenant B's documents, and so would every routing choice made
from them (the bandit's arm). :func:`tenant_idf` is the same Lucene IDF over the tenant's own chunks:

    idf_T(t) = log(1 + (N_T - df_T(t) + 0.5) / (df_T(t) + 0.5))

with ``N_T`` the tenant's chunks and ``df_T(t)`` those of them that contain ``t``; a term none of them
contains is unknown (None), whatever other tenants hold. Invariant: the lookup is a function of the
tenant's own chunks only.

Cost: one term's ``df_T`` counts the tenant's rows among the term's postings (the term-major BM25
weight matrix already lists them), so it is O(df of the term over the index) — microseconds for the
analysed (stopword-free) terms of a query — and it runs only when the router's feature memo misses.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from rag.index.snapshot import IndexSnapshot

IdfLookup = Callable[[str], float | None]


def lucene_idf(n_docs: int, df: int) -> float:
    """``log(1 + (N - df + 0.5) / (df + 0.5))``, as the snapshot's (and BM25's default) IDF."""
    return math.log1p((n_docs - df + 0.5) / (df + 0.5))


class TenantVocabulary:
    """``tenant``'s document frequencies in ``snapshot``, computed per term on demand. Lazy: the tenant's
    rows are looked up on the first :meth:`idf` call (not at all when the router's memo answers)."""

    def __init__(self, snapshot: IndexSnapshot, tenant: str) -> None:
        self.snapshot = snapshot
        self.tenant = tenant
        self._rows: np.ndarray | None = None
        self._n = 0

    def idf(self, term: str) -> float | None:
        """The IDF of an analysed term over the tenant's chunks; None when none of them contains it."""
        term_id = self.snapshot.terms.term_ids.get(term)
        if term_id is None:
            return None
        if self._rows is None:
            self._rows = self.snapshot.tenant_rows(self.tenant)
            self._n = int(np.count_nonzero(self._rows))
        if self._n == 0:
            return None
        weights = self.snapshot.bm25.weights  # term-major: the term's row lists the chunks holding it
        postings = weights.indices[weights.indptr[term_id] : weights.indptr[term_id + 1]]
        df = int(np.count_nonzero(self._rows[postings]))
        return lucene_idf(self._n, df) if df else None


def tenant_idf(snapshot: IndexSnapshot, tenant: str) -> IdfLookup:
    """:meth:`TenantVocabulary.idf` of ``tenant`` in ``snapshot``."""
    return TenantVocabulary(snapshot, tenant).idf
