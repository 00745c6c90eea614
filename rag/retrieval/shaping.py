"""How a request shapes its results after retrieval: grouping by document and MMR diversity.

What results are today, and so the default: one per *document*. Every retriever max-pools its chunks
into their document (:func:`rag.retrieval.retrievers.best_chunk_per_doc`), fusion and rerank work on
documents, and a result shows the document's best chunk (``chunk_id``). So the top 10 always holds 10
distinct documents, and ``group_by: "doc"`` changes neither ids nor order: it adds each result's group
size, ``chunks`` (the document's chunks in the served version; the best one is ``chunk_id``).

``diversity`` (λ in [0, 1]; 0, the default, = off = today's order): maximal marginal relevance over the
first :func:`pool_size` candidates of the final ranking. Step by step, the next result is the candidate
maximising ``(1 - λ) · rel − λ · max sim(candidate, chosen)``, where ``rel`` is the candidate's place in
the ranking scaled to [1, 0) (scale-free: a reranked head and its first-stage tail share no score scale)
and ``sim`` is the cosine of the best chunks' TF-IDF vectors (the BM25 term matrix, IDF over the served
version: available on every route, no store call). Since results are already distinct documents, MMR's
effect is on near-duplicate and same-topic documents: it pushes a second copy of a finding down in favour
of another one. Bounded work: ``pool × pool`` similarities of at most :data:`MAX_POOL` sparse rows, run
in the CPU pool (off the event loop).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import scipy.sparse as sp

from rag.bm25.scoring import idf_lucene
from rag.errors import RagError
from rag.index.snapshot import IndexSnapshot
from rag.types import Hit, Result

MAX_POOL = 200  # candidates MMR re-orders at most (200 x 200 sparse cosines)
POOL_PER_RESULT = 3  # candidates considered per result served (top_k 10: the first 30)


class ShapeError(RagError, ValueError):
    """A result-shaping field out of its range; ``field`` names it (``min_score``, ``diversity``…)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class GroupBy(StrEnum):
    DOC = "doc"

    @classmethod
    def from_str(cls, value: str) -> GroupBy:
        try:
            return cls(value)
        except ValueError:
            raise ShapeError("group_by", f"must be one of {[g.value for g in cls]}, got {value!r}") from None


@dataclass(frozen=True, slots=True)
class ResultShape:
    """The shaping a request asks for; the default is today's results exactly."""

    group_by: GroupBy | None = None
    diversity: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.diversity <= 1.0:
            raise ShapeError("diversity", f"must be in [0, 1] (0 = off), got {self.diversity}")

    @property
    def is_default(self) -> bool:
        return self.group_by is None and self.diversity == 0.0

    def key_params(self) -> dict[str, Any]:
        """What the cache key adds for this shaping: nothing for the default (today's keys unchanged)."""
        if self.is_default:
            return {}
        return {
            "shape": {"group_by": self.group_by.value if self.group_by else None, "diversity": self.diversity}
        }


DEFAULT_SHAPE = ResultShape()


def pool_size(top_k: int, candidates: int) -> int:
    return max(top_k, min(POOL_PER_RESULT * top_k, candidates, MAX_POOL))


def chunk_counts(snapshot: IndexSnapshot) -> np.ndarray:
    """Chunks per document of the version (by document index), computed once per version."""
    return snapshot.derived(
        ("shaping", "chunk_counts"), lambda: np.bincount(snapshot.chunk_doc, minlength=snapshot.n_docs)
    )


def _idf(snapshot: IndexSnapshot) -> np.ndarray:
    def build() -> np.ndarray:
        df = np.asarray((snapshot.terms.tf > 0).sum(axis=0)).ravel()
        return idf_lucene(df, max(snapshot.terms.tf.shape[0], 1))

    return snapshot.derived(("shaping", "idf"), build)


def similarities(snapshot: IndexSnapshot, hits: list[Hit]) -> np.ndarray:
    """Cosine of the TF-IDF vectors (log-scaled term counts × IDF) of each hit's best chunk: the rows'
    nonzeros weighted and normalised in place, then one sparse product."""
    rows = [snapshot.chunk_rows[h.chunk_id] for h in hits]
    sub = snapshot.terms.tf[rows]
    counts = np.diff(sub.indptr)
    data = (1.0 + np.log(sub.data.astype(np.float64))) * _idf(snapshot)[sub.indices]
    owner = np.repeat(np.arange(len(rows)), counts)
    norms = np.sqrt(np.bincount(owner, weights=data * data, minlength=len(rows)))
    norms[norms == 0] = 1.0
    x = sp.csr_matrix((data / norms[owner], sub.indices, sub.indptr), shape=sub.shape)
    sim: np.ndarray = (x @ x.T).toarray()
    return sim


def mmr_order(sim: np.ndarray, diversity: float, k: int) -> list[int]:
    """Indices of the first ``k`` picks of maximal marginal relevance over candidates in ranking order
    (relevance by place: ``1 - i / n``). Ties go to the better-ranked candidate; diversity 0 keeps the
    ranking."""
    n = sim.shape[0]
    rel = 1.0 - np.arange(n) / max(n, 1)
    chosen: list[int] = []
    max_sim = np.zeros(n)
    left = np.ones(n, dtype=bool)
    for _ in range(min(k, n)):
        score = np.where(left, (1.0 - diversity) * rel - diversity * max_sim, -np.inf)
        i = int(np.argmax(score))  # first maximum: the better-ranked among equals
        chosen.append(i)
        left[i] = False
        max_sim = np.maximum(max_sim, sim[i])
    return chosen


def diversify(
    snapshot: IndexSnapshot, hits: list[Hit], diversity: float, top_k: int, candidates: int
) -> list[Hit]:
    """``hits`` with their first ``top_k`` chosen by MMR from the first :func:`pool_size` candidates
    (the rest follow in their order); unchanged when ``diversity`` is 0."""
    if diversity == 0.0 or len(hits) <= 1:
        return hits
    pool = hits[: pool_size(top_k, candidates)]
    picked = mmr_order(similarities(snapshot, pool), diversity, top_k)
    taken = set(picked)
    return [pool[i] for i in picked] + [h for i, h in enumerate(pool) if i not in taken] + hits[len(pool) :]


@dataclass(frozen=True, slots=True)
class Abstention:
    """Why a response holds no results although the retrieval found some: none reached ``min_score``
    (``best``: the highest confidence among them; None when none had one)."""

    reason: str
    min_score: float
    best: float | None


def at_least(results: list[Result], min_score: float | None) -> tuple[list[Result], Abstention | None]:
    """The results whose calibrated confidence is at least ``min_score``, in their order (their ranks
    keep their place in the full ranking); when none is left, none and the :class:`Abstention`. A result
    without a confidence (no model for the legs that ran) does not pass: ``min_score`` fails closed."""
    if min_score is None:
        return results, None
    kept = [
        r
        for r in results
        if r.evidence is not None and r.evidence.confidence is not None and r.evidence.confidence >= min_score
    ]
    if kept or not results:
        return kept, None
    known = [
        r.evidence.confidence for r in results if r.evidence is not None and r.evidence.confidence is not None
    ]
    best = max(known) if known else None
    reason = (
        f"no result reached min_score {min_score:g} (best confidence {best:.3f})"
        if best is not None
        else "no calibrated confidence for the retrievers that answered (a degraded plan)"
    )
    return [], Abstention(reason, min_score, best)
