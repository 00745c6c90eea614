"""Multi-query building blocks as pure functions: query decomposition and pseudo-relevance feedback.

* :func:`decompose` splits a compound query into sub-queries on ``;``/``?`` and on conjunctions or contrast
  markers between clauses, keeping the original first. The caller retrieves for each and fuses (RRF).
* :func:`prf_terms` / :func:`expanded_query` / :func:`prf_scores` are RM3-style pseudo-relevance feedback on
  the BM25 index: pick expansion terms from the top rows of a first pass, score all rows again with the
  original query interpolated with the expansion terms.

Term selection (documented choice): a term's weight is RM1's ``sum_d w_d * tf(t, d) / |d|`` over the
feedback rows, ``w_d`` the first-pass BM25 scores normalised to sum 1 (uniform when no scores are given).
Terms of the query, terms in fewer than ``min_df`` rows (typos, one-document jargon) and terms in more than
``max_df_ratio`` of the rows (near-stopwords) are never picked. Multiplying by IDF as well was measured and
rejected: it favours rare document-specific words and cost 1-2 nDCG@10 points on SciFact train
(``benchmarks/multiquery_eval.py``); the second pass applies IDF anyway through the BM25 weights.

Rows are chunks: the feedback set is the best *rows*; pass ``chunk_doc`` to :func:`prf_scores` to count one
row per document, and ``mask`` to keep the feedback inside the rows a query may see (a tenant's rows).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rag.bm25.index import BM25Index
from rag.bm25.scoring import idf, score_terms, top_k
from rag.text.analyzer import Analyzer

# --------------------------------------------------------------------------------------------------------
# decomposition

# Split points, strongest first: a cut at a stronger point is tried before any weaker one, so with
# ``max_parts`` reached the query is cut where clauses most clearly end.
_STRONG = r"[;?]"
_CONTRAST = r"\b(?:but|whereas|while|versus|vs\.?|(?:(?:when|as)\s+)?compared\s+(?:to|with))(?!\w)"
# "and"/"or" joining clauses: after a comma, or before a question word / auxiliary ("... and how does ...")
_CLAUSE_WORDS = (
    "what|how|why|when|where|which|who|whom|whose|whether|is|are|was|were|does|do|did|can|could|should|"
    "would|will|has|have|had"
)
_CLAUSE_AND = rf",\s*(?:and|or)\b|\b(?:and|or)(?=\s+(?:{_CLAUSE_WORDS})\b)"
_BARE_AND = r"\b(?:and|or)\b"
_SPLITTERS = [re.compile(p, re.IGNORECASE) for p in (_STRONG, _CONTRAST, _CLAUSE_AND, _BARE_AND)]
_TRIM = " \t\r\n,;:.?!-"


@dataclass(frozen=True, slots=True)
class _Cut:
    priority: int
    start: int  # the delimiter occupies text[start:end]
    end: int


_LIST_ITEM_WORDS = 3
# Each trial of a cut analyses the whole text once; a real compound query offers a handful of cuts, a
# hostile one ("a;a;a;…") a cut per character pair. Trying at most this many keeps decomposition linear
# in the query's length.
MAX_CUT_TRIALS = 16


def _ends_list(text: str, comma: int) -> bool:
    """Whether the comma at ``comma`` closes an enumeration ("A, B, and C"): an earlier comma at most
    ``_LIST_ITEM_WORDS`` words before it."""
    previous = text.rfind(",", 0, comma)
    return previous >= 0 and len(text[previous + 1 : comma].split()) <= _LIST_ITEM_WORDS


def _candidate_cuts(text: str, *, bare_conjunctions: bool) -> list[_Cut]:
    """Every possible cut, strongest first, then left to right; ", and" ending a list is no cut."""
    splitters = _SPLITTERS if bare_conjunctions else _SPLITTERS[:-1]
    return [
        _Cut(priority, m.start(), m.end())
        for priority, pattern in enumerate(splitters)
        for m in pattern.finditer(text)
        if not (text[m.start()] == "," and _ends_list(text, m.start()))
    ]


def _pieces(text: str, cuts: Sequence[_Cut]) -> list[str]:
    """The text between consecutive cuts (in position order), trimmed of spaces and punctuation."""
    bounds = [0, *[x for c in sorted(cuts, key=lambda c: c.start) for x in (c.start, c.end)], len(text)]
    return [text[bounds[i] : bounds[i + 1]].strip(_TRIM) for i in range(0, len(bounds), 2)]


def decompose(
    query: str,
    analyzer: Analyzer,
    *,
    max_parts: int = 3,
    min_content_tokens: int = 2,
    bare_conjunctions: bool = False,
) -> list[str]:
    """The original query, followed by its sub-queries when it splits into at least two.

    Candidate cuts, strongest first: ``;`` and ``?``; contrast markers (but, whereas, while, versus/vs,
    [when/as] compared to/with); ``and``/``or`` between clauses, i.e. after a comma that does not end a
    list ("A, B, and C") or before a question word or auxiliary ("what is X and how does Y work").
    ``bare_conjunctions`` makes every ``and``/``or`` a candidate: that also splits noun phrases
    ("between A and B"), which split one SciFact claim in seven and lost ~8 nDCG@10 points on them.
    Cuts are accepted strongest first, then left to right, while every part keeps at least
    ``min_content_tokens`` analysed tokens (stopwords dropped: "salt and pepper" stays whole) and until
    there are ``max_parts`` parts (the original not counted), trying at most ``MAX_CUT_TRIALS`` cuts.
    Parts are literal spans of the query (no shared-subject rewriting), trimmed of edge punctuation.
    """
    if max_parts < 1:
        raise ValueError(f"max_parts must be at least 1, got {max_parts}")
    if min_content_tokens < 1:
        raise ValueError(f"min_content_tokens must be at least 1, got {min_content_tokens}")
    text = " ".join(query.split())
    accepted: list[_Cut] = []
    trials = 0
    for cut in _candidate_cuts(text, bare_conjunctions=bare_conjunctions):
        if len(accepted) + 1 >= max_parts or trials >= MAX_CUT_TRIALS:
            break
        if any(a.start < cut.end and cut.start < a.end for a in accepted):
            continue
        trials += 1
        trial = [*accepted, cut]
        if all(len(analyzer.tokens(p)) >= min_content_tokens for p in _pieces(text, trial)):
            accepted = trial
    if not accepted:
        return [query]
    return [query, *_pieces(text, accepted)]


# --------------------------------------------------------------------------------------------------------
# pseudo-relevance feedback


def feedback_rows(
    scores: np.ndarray,
    k: int,
    *,
    mask: np.ndarray | None = None,
    chunk_doc: np.ndarray | None = None,
) -> np.ndarray:
    """The ``k`` best matching rows of a first pass (score > 0, inside ``mask``), best first. With
    ``chunk_doc`` (row -> document), only each document's best row counts, so ``k`` counts documents."""
    if k < 0:
        raise ValueError(f"feedback_docs must be >= 0, got {k}")
    candidates = np.flatnonzero(scores > 0)
    if mask is not None:
        candidates = candidates[mask[candidates]]
    if chunk_doc is None:
        return top_k(scores, k, candidates=candidates)
    ranked = top_k(scores, candidates.size, candidates=candidates)
    _, first = np.unique(chunk_doc[ranked], return_index=True)
    return ranked[np.sort(first)][:k]


def prf_terms(
    bm25: BM25Index,
    feedback_rows: Sequence[int] | np.ndarray,
    query_term_ids: Sequence[int] | np.ndarray,
    *,
    n_terms: int = 10,
    min_df: int = 2,
    max_df_ratio: float = 0.3,
    row_weights: Sequence[float] | np.ndarray | None = None,
) -> list[tuple[int, float]]:
    """Up to ``n_terms`` (term id, weight) expansion terms, best first (ties: lower id first).

    weight(t) = sum_d w_d * tf(t, d) / |d| over the feedback rows (RM1), ``w_d`` = ``row_weights``
    normalised to sum 1 (uniform when None); the weights of all candidate terms sum to at most 1. Query
    terms and terms whose document frequency is below ``min_df`` or above ``max_df_ratio`` * rows are
    excluded (on a small index, raise ``max_df_ratio``: with 10 rows, 0.3 leaves only df <= 3).
    """
    if n_terms < 0:
        raise ValueError(f"n_terms must be >= 0, got {n_terms}")
    if not 0 < max_df_ratio <= 1:
        raise ValueError(f"max_df_ratio must be in (0, 1], got {max_df_ratio}")
    rows = np.asarray(feedback_rows, dtype=np.int64)
    if rows.size == 0 or n_terms == 0:
        return []
    doc_weights = _normalised_row_weights(row_weights, rows.size)
    feedback = bm25.terms.tf[rows]
    lengths = np.asarray(feedback.sum(axis=1), dtype=np.float64).ravel()
    tf = feedback.tocoo()
    contrib = tf.data * doc_weights[tf.row] / np.maximum(lengths[tf.row], 1.0)
    terms, inverse = np.unique(tf.col, return_inverse=True)
    relevance = np.bincount(inverse, weights=contrib, minlength=terms.size)
    df = document_frequency(bm25, terms)
    keep = (df >= min_df) & (df <= max_df_ratio * bm25.size) & ~np.isin(terms, np.asarray(query_term_ids))
    terms, weights = terms[keep], relevance[keep]
    order = np.lexsort((terms, -weights))[:n_terms]
    return [(int(terms[i]), float(weights[i])) for i in order if weights[i] > 0]


def _normalised_row_weights(row_weights: Sequence[float] | np.ndarray | None, n: int) -> np.ndarray:
    if row_weights is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(row_weights, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"row_weights must have one weight per feedback row ({n}), got shape {w.shape}")
    if (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"row_weights must be >= 0 and not all 0, got {w.tolist()}")
    normalised: np.ndarray = w / w.sum()
    return normalised


def document_frequency(bm25: BM25Index, term_ids: np.ndarray) -> np.ndarray:
    """Rows containing each term: the length of the term's row in the term-major weight matrix."""
    indptr = bm25.weights.indptr
    return np.asarray(indptr[term_ids + 1] - indptr[term_ids], dtype=np.int64)


def term_idf(bm25: BM25Index, term_ids: np.ndarray) -> np.ndarray:
    """The index's BM25 IDF of each term id (same variant as scoring): a router feature, since PRF's
    effect depends on how specific the query terms are."""
    df = document_frequency(bm25, np.asarray(term_ids, dtype=np.int64))
    return idf(df, bm25.size, bm25.params.idf, bm25.params.epsilon)


def expanded_query(
    ids: np.ndarray,
    counts: np.ndarray,
    expansion: Sequence[tuple[int, float]],
    *,
    original_weight: float = 0.7,
) -> tuple[np.ndarray, np.ndarray]:
    """RM3 interpolation: (term ids, weights) for :func:`~rag.bm25.scoring.score_terms`.

    The original counts are scaled to sum to ``original_weight`` and the expansion weights to
    ``1 - original_weight``; when one side is empty the other sums to 1. A term on both sides gets the
    sum. Ids come out sorted.
    """
    if not 0 <= original_weight <= 1:
        raise ValueError(f"original_weight must be in [0, 1], got {original_weight}")
    q_ids = np.asarray(ids, dtype=np.int64)
    q_w = np.asarray(counts, dtype=np.float64)
    e_ids = np.fromiter((t for t, _ in expansion), dtype=np.int64, count=len(expansion))
    e_w = np.fromiter((w for _, w in expansion), dtype=np.float64, count=len(expansion))
    if (q_w < 0).any() or (e_w < 0).any():
        raise ValueError("query counts and expansion weights must be >= 0")
    q_sum, e_sum = q_w.sum(), e_w.sum()
    if q_sum > 0 and e_sum > 0:
        q_share, e_share = original_weight, 1.0 - original_weight
    else:
        q_share, e_share = float(q_sum > 0), float(e_sum > 0)
    parts_w = [q_w * (q_share / q_sum) if q_sum > 0 else q_w, e_w * (e_share / e_sum) if e_sum > 0 else e_w]
    all_ids = np.concatenate([q_ids, e_ids])
    all_w = np.concatenate(parts_w)
    unique, inverse = np.unique(all_ids, return_inverse=True)
    return unique, np.bincount(inverse, weights=all_w, minlength=unique.size)


def prf_scores(
    bm25: BM25Index,
    tokens: Sequence[str],
    *,
    feedback_docs: int = 10,
    n_terms: int = 10,
    original_weight: float = 0.7,
    min_df: int = 2,
    max_df_ratio: float = 0.3,
    mask: np.ndarray | None = None,
    chunk_doc: np.ndarray | None = None,
) -> np.ndarray:
    """BM25 + RM3 scores of every row for an analysed query: first pass, expansion terms from the best
    ``feedback_docs`` rows (weighted by first-pass score), second pass with :func:`expanded_query`.

    Scores are those of the L1-normalised weighted query, so not on the plain BM25 scale (rank and
    min-max fusion do not care). ``mask`` limits the feedback rows (not the scoring: apply it afterwards
    as for plain BM25); ``chunk_doc`` makes ``feedback_docs`` count documents rather than chunks.
    """
    ids, counts = bm25.query_terms(tokens)
    first = score_terms(bm25.weights, ids, counts)
    rows = feedback_rows(first, feedback_docs, mask=mask, chunk_doc=chunk_doc)
    expansion = prf_terms(
        bm25, rows, ids, n_terms=n_terms, min_df=min_df, max_df_ratio=max_df_ratio, row_weights=first[rows]
    )
    return score_terms(bm25.weights, *expanded_query(ids, counts, expansion, original_weight=original_weight))
