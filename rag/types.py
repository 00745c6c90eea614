"""Value types shared by every stage. Frozen dataclasses, so the type checker sees the pipeline."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import numpy as np

from rag.tenancy import scoped_id

VectorField = Literal["embedding", "embeddings", "vectors"]


def passage_text(title: str, text: str) -> str:
    """What is embedded, indexed and shown to the reranker: the title line (if any), then the text."""
    return f"{title}\n{text}" if title else text


@dataclass(frozen=True, slots=True, eq=False)
class GivenVectors:
    """Vectors given for one document's chunks (one row each, in chunk order) and the input field they
    came in (named in errors); checked by :func:`rag.index.given_vectors.check_documents`."""

    rows: np.ndarray | Sequence[Sequence[float]]  # (n_chunks, dim); an ndarray once checked
    field: VectorField = "embeddings"


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""  # "" = the unscoped namespace (see rag.tenancy)
    # vectors computed elsewhere, one per chunk (rag.index.given_vectors); None: the ingest embeds
    vectors: GivenVectors | None = field(default=None, compare=False, repr=False)
    # who may see it (rag.acl: sorted "user:<name>" / "group:<name>" entries); (): the tenant's default
    acl: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        """The index-wide id: the document id scoped by its tenant."""
        return scoped_id(self.tenant, self.doc_id)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document; ``chunk_id`` is ``<doc_id>#<n>``."""

    chunk_id: str
    doc_id: str
    ordinal: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""
    acl: tuple[str, ...] = ()  # the document's (rag.acl)

    @property
    def passage(self) -> str:
        return passage_text(self.title, self.text)


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document from a retriever, the fusion or the reranker.

    ``doc_id`` and ``chunk_id`` are index-wide *scoped* ids (:func:`rag.tenancy.scoped_id`); for the
    unscoped namespace they are the plain ids. :class:`Result` carries the plain ones.
    """

    doc_id: str
    score: float
    chunk_id: str


@dataclass(frozen=True, slots=True)
class LegEvidence:
    """Where one first-stage retriever placed a document: its 1-based rank in that retriever's list and
    its score there (BM25: the BM25 score of the best chunk; dense: the vector store's cosine of the best
    chunk, at the dimension searched)."""

    rank: int
    score: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """Why a result is where it is (:mod:`rag.retrieval.explain`). ``bm25`` / ``dense``: the document in
    the query's own list of that retriever (None: the retriever did not run, or did not return it);
    ``fused``: its fusion score (None when one list stood alone); ``rerank``: the cross-encoder score when
    it was reranked; ``confidence``: the calibrated estimate of P(relevant) from the first-stage evidence
    (:mod:`rag.index.calibration`; None for an uncalibrated collection)."""

    bm25: LegEvidence | None = None
    dense: LegEvidence | None = None
    fused: float | None = None
    rerank: float | None = None
    confidence: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """From :func:`dataclasses.asdict` form (a cached answer)."""
        legs = {k: LegEvidence(**data[k]) if data.get(k) else None for k in ("bm25", "dense")}
        return cls(legs["bm25"], legs["dense"], data.get("fused"), data.get("rerank"), data.get("confidence"))


@dataclass(frozen=True, slots=True)
class Result:
    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    chunk_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    evidence: Evidence | None = None
    chunks: int | None = None  # group_by "doc": the document's chunks in the served version

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """From :func:`dataclasses.asdict` form (a cached answer; one cached before evidence has none)."""
        evidence = data.get("evidence")
        return cls(**{**data, "evidence": Evidence.from_dict(evidence) if evidence else None})


# -- the pipeline's vocabulary ------------------------------------------------------------------------
# Each value below is a wire value: it appears as is in the HTTP JSON (``degraded[].step/code``,
# ``timings_ms`` keys, ``cache``), as stream event names and as metric label values. Renaming one is an
# API change.


class Dependency(StrEnum):
    """An outside dependency a step calls; each has its own circuit breaker."""

    EMBEDDER = "embedder"  # the model threads
    QDRANT = "qdrant"  # the vector store
    RERANKER = "reranker"
    REDIS = "redis"  # cache, rate limit, shared state
    LLM = "llm"  # the optional answer synthesis endpoint


class Retriever(StrEnum):
    """A first-stage retriever a plan may ask for (``QueryPlan.retrievers``)."""

    BM25 = "bm25"
    DENSE = "dense"


class Step(StrEnum):
    """A step of answering a query, in the order they run."""

    PLAN = "plan"
    CACHE = "cache"  # the cache as a whole (a Redis failure degrades it)
    CACHE_L1 = "cache.l1"
    EMBED = "embed"
    CACHE_L2 = "cache.l2"
    RETRIEVE = "retrieve"  # the first stage as a whole (answered by BM25 alone, or from the cache)
    RETRIEVE_BM25 = "retrieve.bm25"
    RETRIEVE_BM25_PRF = "retrieve.bm25.prf"
    RETRIEVE_DENSE = "retrieve.dense"
    FUSE = "fuse"
    RERANK_GATE = "rerank.gate"
    RERANK = "rerank"
    SYNTHESIZE = "synthesize"

    @property
    def dependency(self) -> Dependency | None:
        """The dependency this step calls (None: in-process work)."""
        return _DEPENDENCY_OF.get(self)

    def cost_key(self, dims: int | None) -> str:
        """The step's key in the running wall-time estimates when its cost depends on the vector
        dimension searched (``retrieve.dense@64``, ``retrieve.dense@full``). A key, never parsed."""
        return f"{self.value}@{dims or 'full'}"


_DEPENDENCY_OF: dict[Step, Dependency] = {
    Step.CACHE: Dependency.REDIS,
    Step.CACHE_L2: Dependency.REDIS,
    Step.EMBED: Dependency.EMBEDDER,
    Step.RETRIEVE_DENSE: Dependency.QDRANT,
    Step.RERANK: Dependency.RERANKER,
    Step.SYNTHESIZE: Dependency.LLM,
}


@dataclass(frozen=True, slots=True)
class StepKey:
    """One run of a step within a query: the step, and for multi-query the sub-query it ran for.

    ``str()`` is its wire name: the step's value, with ``.q<i>`` for the ``i``-th sub-query
    (``retrieve.bm25.q2``, ``embed.q1``). Built from its parts, never parsed back.
    """

    step: Step
    sub_query: int = 0  # 0: the query itself; i >= 1: the i-th sub-query of a decomposition

    def __str__(self) -> str:
        return self.step.value if self.sub_query == 0 else f"{self.step.value}.q{self.sub_query}"

    @property
    def dependency(self) -> Dependency | None:
        return self.step.dependency

    @property
    def component(self) -> str:
        """The ``component`` label of ``rag_errors_total``: the dependency, else the step itself."""
        dependency = self.step.dependency
        return dependency.value if dependency is not None else self.step.value


@dataclass(frozen=True, slots=True)
class ListKey:
    """One ranked list fed to fusion: which retriever made it, for which sub-query, PRF-expanded or not.

    ``str()`` is its name (``bm25``, ``dense``, ``bm25.prf``, ``bm25.q1``, ``dense.q2``).
    """

    retriever: Retriever
    sub_query: int = 0  # as in StepKey
    prf: bool = False  # BM25 with pseudo-relevance-feedback expansion of the query itself

    def __post_init__(self) -> None:
        if self.prf and (self.retriever is not Retriever.BM25 or self.sub_query):
            raise ValueError(f"only the query's own BM25 list is PRF-expanded, got {self!r}")

    def __str__(self) -> str:
        if self.prf:
            return f"{self.retriever.value}.prf"
        return self.retriever.value if self.sub_query == 0 else f"{self.retriever.value}.q{self.sub_query}"

    @property
    def step(self) -> StepKey:
        """The retrieval step that makes this list."""
        if self.prf:
            return StepKey(Step.RETRIEVE_BM25_PRF)
        if self.retriever is Retriever.BM25:
            return StepKey(Step.RETRIEVE_BM25, self.sub_query)
        return StepKey(Step.RETRIEVE_DENSE, self.sub_query)


class CacheLevel(StrEnum):
    """Where an answer came from, as the response's ``cache`` field says."""

    L1 = "l1"  # an exact repeat, in process
    L2 = "l2"  # a semantically equal cached query
    COALESCED = "coalesced"  # shared the work of an identical query in flight
    MISS = "miss"  # computed; the cache was asked
    OFF = "off"  # computed; no cache


class DegradationCode(StrEnum):
    """Why a step did not run as planned (``degraded[].code``, the ``rag_degradations_total`` label)."""

    DEADLINE = "deadline"  # it would not fit in the time left, so it did not start
    TIMEOUT = "timeout"
    BREAKER_OPEN = "breaker_open"
    ERROR = "error"
    REDIS_UNAVAILABLE = "redis_unavailable"
    UNAVAILABLE = "unavailable"  # the plan asked for what this index or process does not have
    NOT_CONFIGURED = "not_configured"
    UNVALIDATED = "unvalidated"  # the reranker was not shown to help on this collection (its domain record)
    LOWER_DIMS = "lower_dims"  # the dense search ran at a lower Matryoshka dimension to fit the deadline
    SHALLOWER = "shallower"  # fewer pairs reranked to fit the deadline
    BM25_ONLY = "bm25_only"
    CACHE_ONLY = "cache_only"
    BUDGET = "budget"  # the tenant's budget refused the call
    SHED = "shed"  # given up for load: the queue in front of it would not serve it in the time left
    DEGRADED_ENTRY = "degraded_entry"  # served from a degraded answer cached briefly under load

    @property
    def is_failure(self) -> bool:
        """Whether a dependency failed (counted in ``rag_errors_total``), rather than a planned
        step being skipped or shrunk by policy."""
        return self in _FAILURES

    @property
    def timed_out(self) -> bool:
        """Whether the step ran out of time (did not fit, or hit its timeout)."""
        return self in (DegradationCode.TIMEOUT, DegradationCode.DEADLINE)


_FAILURES = frozenset(
    {
        DegradationCode.ERROR,
        DegradationCode.TIMEOUT,
        DegradationCode.BREAKER_OPEN,
        DegradationCode.REDIS_UNAVAILABLE,
    }
)


@dataclass(frozen=True, slots=True)
class Degradation:
    """A step that did not run as planned: which run of which step, why (``code``, a fixed vocabulary
    that metrics label), and what happened in words (``reason``)."""

    step: StepKey
    code: DegradationCode
    reason: str

    def as_dict(self) -> dict[str, str]:
        """The wire form: ``{"step", "code", "reason"}``, all strings."""
        return {"step": str(self.step), "code": self.code.value, "reason": self.reason}
