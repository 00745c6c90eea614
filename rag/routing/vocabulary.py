"""Each tenant's own vocabulary statistics, for the router's query features.

One index version holds every tenant's chunks, and its IDF (:meth:`rag.index.snapshot.IndexSnapshot.idf`)
counts them all: features computed from it (``unknown_terms``, ``rare_terms``, ``idf_*``, ``difficulty``)
would tell tenant A whether a word occurs in tenant B's documents, and so would every routing choice made
from them (the bandit's arm). :func:`tenant_idf` is the same Lucene IDF over the tenant's own chunks:

    idf_T(t) = log(1 + (N_T - df_T(t) + 0.5) / (df_T(t) + 0.5))

with ``N_T`` the tenant's chunks and ``df_T(t)`` those of them that contain ``t``; a term none of them
contains is unknown (None), whatever other tenants hold. Invariant: a tenant's lookup is a function of
its own chunks only.

Cost: :func:`vocabularies` counts every tenant's document frequencies once per index version (one pass
over the term matrix, O(postings + tenants × vocabulary), kept with the version): the service builds them
in its worker thread when it opens a version, so a query's lookup is a binary search per term.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from rag.bm25.scoring import idf_lucene
from rag.index.snapshot import IndexSnapshot

IdfLookup = Callable[[str], float | None]
DERIVED_KEY = "routing.tenant_vocabularies"  # where a version keeps them (IndexSnapshot.derived)


@dataclass(frozen=True, slots=True)
class TenantVocabulary:
    """One tenant's chunks in one version: how many, and in how many of them each term occurs."""

    n_docs: int
    term_ids: np.ndarray  # sorted ids (the version's term ids) of the terms the tenant's chunks contain
    df: np.ndarray  # the document frequency of each, among the tenant's chunks (>= 1)

    def document_frequency(self, term_id: int) -> int:
        i = int(np.searchsorted(self.term_ids, term_id))
        return int(self.df[i]) if i < len(self.term_ids) and self.term_ids[i] == term_id else 0

    def idf(self, term_id: int) -> float | None:
        """The term's IDF over the tenant's chunks; None when none of them contains it."""
        df = self.document_frequency(term_id)
        return float(idf_lucene(np.array([df]), self.n_docs)[0]) if df else None


EMPTY = TenantVocabulary(0, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


def build_vocabularies(tf: sp.csr_matrix, row_tenants: Sequence[str]) -> dict[str, TenantVocabulary]:
    """Every tenant's vocabulary from the term matrix (rows = chunks) and the tenant of each row."""
    if tf.shape[0] != len(row_tenants):
        raise ValueError(f"{tf.shape[0]} term-matrix rows but {len(row_tenants)} row tenants")
    names = sorted(set(row_tenants))
    code = {name: i for i, name in enumerate(names)}
    codes = np.fromiter((code[t] for t in row_tenants), dtype=np.int64, count=len(row_tenants))
    out: dict[str, TenantVocabulary] = {}
    for i, name in enumerate(names):
        rows = tf[np.flatnonzero(codes == i)]
        df = np.bincount(rows.indices[rows.data > 0], minlength=tf.shape[1])
        ids = np.flatnonzero(df)
        out[name] = TenantVocabulary(rows.shape[0], ids.astype(np.int64), df[ids].astype(np.int64))
    return out


def vocabularies(snapshot: IndexSnapshot) -> dict[str, TenantVocabulary]:
    """The version's per-tenant vocabularies, built on first use and kept with the version."""
    return snapshot.derived(
        DERIVED_KEY, lambda: build_vocabularies(snapshot.terms.tf, [c.tenant for c in snapshot.chunks])
    )


def tenant_idf(snapshot: IndexSnapshot, tenant: str) -> IdfLookup:
    """The IDF of an analysed term over ``tenant``'s chunks of ``snapshot``; None for a term that none of
    them contains. Lazy: the vocabularies are looked up on the first call (not at all on a memo hit)."""
    found: list[TenantVocabulary] = []

    def idf(term: str) -> float | None:
        term_id = snapshot.terms.term_ids.get(term)
        if term_id is None:
            return None
        if not found:
            found.append(vocabularies(snapshot).get(tenant, EMPTY))
        return found[0].idf(term_id)

    return idf
