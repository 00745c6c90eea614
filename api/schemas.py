"""Request and response models. Limits live here, so that the OpenAPI document states them exactly."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from rag.acl import ENTRY_PATTERN, MAX_ACL_ENTRIES
from rag.cache.keys import normalize_query
from rag.index.given_vectors import MAX_DIM, NORM_TOLERANCE
from rag.retrieval.filters import FIELD_PATTERN, MAX_FILTER_FIELDS, MAX_FILTER_STRING, MAX_FILTER_VALUES
from rag.rollout.config import Profile
from rag.tenancy import TENANT_PATTERN as TENANT_RE
from rag.types import DegradationCode, Evidence

MAX_QUERY_CHARS = 2048
MAX_TOP_K = 100
MAX_BATCH_DOCS = 10_000
MAX_DOC_TEXT_CHARS = 1_000_000
MAX_TITLE_CHARS = 1_000
MAX_METADATA_FIELDS = 32
INT64 = 2**63

FilterString = Annotated[str, StringConstraints(max_length=MAX_FILTER_STRING)]
FilterInt = Annotated[StrictInt, Field(ge=-INT64, lt=INT64)]
FilterScalar = FilterString | FilterInt | StrictBool
FieldName = Annotated[str, StringConstraints(pattern=FIELD_PATTERN)]
DocId = Annotated[str, StringConstraints(pattern=r"^[^\x00-\x1f\x7f]{1,256}$")]
NonBlank = r"\S"  # at least one non-space character


class QueryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    query: Annotated[
        str,
        StringConstraints(min_length=1, max_length=MAX_QUERY_CHARS, pattern=NonBlank),
        Field(description=f"at most {MAX_QUERY_CHARS} characters, also after Unicode normalisation (NFKC)"),
    ]
    top_k: Annotated[int, Field(ge=1, le=MAX_TOP_K)] = 10
    filters: (
        Annotated[
            dict[
                FieldName,
                FilterScalar
                | Annotated[list[FilterScalar], Field(min_length=1, max_length=MAX_FILTER_VALUES)],
            ],
            Field(max_length=MAX_FILTER_FIELDS),
        ]
        | None
    ) = Field(None, description="metadata field -> value or list of values; fields ANDed, values ORed")
    profile: Profile | None = Field(None, description="plan limits for this query; default: the deployment's")
    answer: bool = Field(
        False, description="also synthesise an answer from the passages (needs RAG_LLM_URL; else degraded)"
    )
    session_id: (
        Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")] | None
    ) = Field(None, description="the unit of per-session feature flags (A/B by session); default: the tenant")

    # -- result shaping (rag.retrieval.shaping, rag.index.calibration) --
    min_score: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None,
        description="keep only results whose calibrated confidence (estimated P(relevant), in [0, 1]) is at "
        "least this; none left: results [] and `abstained` says why. Needs a calibrated collection "
        "(`rag tune`), else 422",
    )
    group_by: Literal["doc"] | None = Field(
        None,
        description='results are one per document already (its best chunk); "doc" adds each one\'s '
        "`chunks` (the document's chunk count)",
    )
    diversity: Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)] = Field(
        0.0, description="MMR weight in [0, 1]: 0 = off (the ranking as is); higher trades rank for novelty"
    )

    @field_validator("query")
    @classmethod
    def _normalised_within_limit(cls, query: str) -> str:
        """The limit holds for the text the cache keys on too: NFKC can turn one character into 18
        (U+FDFA), so a query within the limit could still make a key 18 times as long."""
        if len(normalize_query(query)) > MAX_QUERY_CHARS:
            raise PydanticCustomError(
                "string_too_long_normalized",
                "String should have at most {max_length} characters after Unicode normalisation (NFKC)",
                {"max_length": MAX_QUERY_CHARS},
            )
        return query


class ResultOut(BaseModel):
    doc_id: str
    chunk_id: str
    rank: int
    score: float
    title: str
    text: str
    metadata: dict[str, Any]
    # the typed value itself (rag.types.Evidence): taken as it is, no second model to validate per result
    evidence: Evidence | None = Field(
        None,
        description="why the result is here: bm25 / dense {rank, score} (its place and score in that "
        "retriever's list; null: the leg did not run or did not return it), fused (the fusion score; null "
        "when one list stood alone), rerank (the cross-encoder score when reranked), confidence (calibrated "
        "estimate of P(relevant) in [0, 1]; null: the collection has no calibration)",
    )
    chunks: int | None = Field(
        None, description='group_by "doc": the document\'s chunks (chunk_id is the best)'
    )


class AbstainedOut(BaseModel):
    reason: str
    min_score: float
    best: float | None = Field(description="the best confidence among the results withheld")


WireName = Annotated[str, BeforeValidator(str)]  # a vocabulary value (StepKey, an enum) by its wire name


class DegradationOut(BaseModel):
    step: WireName = Field(
        description="the step that did not run as planned (rerank, retrieve.dense, cache…)"
    )
    code: WireName = Field(description=", ".join(DegradationCode))
    reason: str


class CostOut(BaseModel):
    embedded_texts: int
    rerank_pairs: int
    candidates: int
    cpu_ms: float | None = Field(None, description="CPU-milliseconds (running averages per unit of work)")
    money: float | None = Field(None, description="at the rollout config's unit prices")
    currency: str | None = None
    prompt_tokens: int = Field(0, description="LLM tokens this request was charged for (answer: true)")
    completion_tokens: int = 0
    llm_money: float = Field(0.0, description="the synthesis's share of money (booked against the budget)")


class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: Annotated[str, StringConstraints(min_length=1, max_length=128)] = Field(
        description="the request_id of the /query response being rated"
    )
    rating: Annotated[float, Field(ge=1, le=5)] | None = Field(None, description="1 (useless) … 5 (perfect)")
    clicked: (
        Annotated[
            list[Annotated[str, StringConstraints(min_length=1, max_length=256)]], Field(max_length=100)
        ]
        | None
    ) = Field(None, description="doc ids the user opened ([] = saw the results, opened none)")
    relevance: (
        Annotated[
            dict[
                Annotated[str, StringConstraints(min_length=1, max_length=256)],
                Annotated[float, Field(ge=0, le=3)],
            ],
            Field(min_length=1, max_length=100),
        ]
        | None
    ) = Field(None, description="doc id -> graded relevance 0..3 (strongest signal)")


class FeedbackOut(BaseModel):
    request_id: str
    arm: str = Field(description="the plan arm that served the request")
    quality: float = Field(description="reward before cost, in [0, 1]")
    reward: float = Field(description="quality - cost_weight x CPU-seconds: what the bandit learns")
    cpu_s: float = Field(description="the CPU-seconds the answer cost")


class RolloutOut(BaseModel):
    version: str
    source: str
    errors: dict[str, str]
    config: dict[str, Any]


class FallbackKeyOut(BaseModel):
    tenant: str
    flag: str
    tripped: bool = Field(description="true: this tenant is served the baseline for this flag until reset")
    window: dict[str, float] = Field(description="count, errors, timeouts, rates and mean latency")
    reason: str | None = Field(None, description="which threshold tripped, its value and limit")
    tripped_for_s: float | None = None


class FallbackResetBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tenant: Annotated[str, StringConstraints(pattern=TENANT_RE)] | None = None
    flag: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_.-]{1,64}$")] | None = None


class FallbackResetOut(BaseModel):
    reset: int = Field(description="how many tripped paths were put back in service")


class AnswerOut(BaseModel):
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    reused: bool = Field(
        False,
        description="the answer to the same normalised query from the same passages, served again with no "
        "LLM call (an L2 hit's passages are always synthesized afresh)",
    )


class QueryResponse(BaseModel):
    """Read from a :class:`rag.service.answer.QueryAnswer` attribute by attribute
    (``model_validate(answer, from_attributes=True)``)."""

    model_config = ConfigDict(from_attributes=True)

    request_id: str
    results: list[ResultOut]
    route: str = Field(description="the pipeline that answered: bm25, dense, hybrid, hybrid-rerank")
    plan: dict[str, Any]
    degraded: list[DegradationOut]
    cache: Literal["off", "l1", "l2", "miss", "coalesced"] = Field(  # CacheLevel's values (a test checks)
        description="l1: exact repeat; l2: a semantically equal cached query; coalesced: shared the work "
        "of an identical query in flight; miss: computed; off: no cache"
    )
    timings_ms: dict[str, float] = Field(description="wall time of each pipeline step, in order")
    cost: CostOut
    index_version: str
    took_ms: float
    answer: AnswerOut | None = Field(None, description="the synthesised answer, when asked for and available")
    abstained: AbstainedOut | None = Field(
        None, description="min_score left no result: why (results is then empty)"
    )


class BreakerOut(BaseModel):
    name: str
    state: Literal["closed", "open", "half-open"]
    calls_in_window: int
    failure_rate: float
    slow_rate: float
    retry_in_s: float
    reason: str


class BreakerChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    state: Literal["closed", "open"] = Field(description="force the breaker open (until a probe) or closed")


class PurgeOut(BaseModel):
    tenant: str
    purged: bool


Metadata = Annotated[
    dict[FieldName, FilterScalar | Annotated[list[FilterScalar], Field(max_length=MAX_FILTER_VALUES)]],
    Field(max_length=MAX_METADATA_FIELDS),
]


Vector = Annotated[list[float], Field(min_length=1, max_length=MAX_DIM)]
MAX_CHUNK_VECTORS = 10_000  # vectors given for one document (its chunks)


AclEntry = Annotated[str, StringConstraints(pattern=ENTRY_PATTERN)]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: DocId
    title: Annotated[str, StringConstraints(max_length=MAX_TITLE_CHARS)] = ""
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_DOC_TEXT_CHARS, pattern=NonBlank)]
    metadata: Metadata = Field(default_factory=dict)
    acl: Annotated[list[AclEntry], Field(min_length=1, max_length=MAX_ACL_ENTRIES)] | None = Field(
        None,
        description="who may see the document: 'user:<name>' / 'group:<name>' entries (a caller sees it when "
        "one names its user or a group); absent: the tenant's default (RAG_ACL_DEFAULT: public or deny)",
    )
    embedding: Vector | None = Field(
        None,
        description="the document's vector, computed elsewhere by the collection's embedder (name it in "
        "embedding_model), for a document that is one chunk; the document is then not embedded here. "
        f"The collection's dimension, finite, L2 norm within {NORM_TOLERANCE} of 1 (normalised exactly)",
    )
    embeddings: Annotated[list[Vector], Field(min_length=1, max_length=MAX_CHUNK_VECTORS)] | None = Field(
        None, description="one vector per chunk the ingest makes of the document, in order (as embedding)"
    )

    @model_validator(mode="after")
    def _one_vector_field(self) -> DocumentIn:
        if self.embedding is not None and self.embeddings is not None:
            raise ValueError("give embedding (one chunk) or embeddings (one per chunk), not both")
        return self


class IngestBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    upsert: Annotated[list[DocumentIn], Field(max_length=MAX_BATCH_DOCS)] = Field(default_factory=list)
    delete: Annotated[list[DocId], Field(max_length=MAX_BATCH_DOCS)] = Field(
        default_factory=list, description="ids of this tenant's documents to delete"
    )
    embedding_model: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        None,
        description="the model that computed the given embedding(s): must be the collection's embedder "
        "(GET /ready names it); required when any document gives vectors",
    )

    @model_validator(mode="after")
    def _consistent(self) -> IngestBody:
        if not self.upsert and not self.delete:
            raise ValueError("give at least one document to upsert or one id to delete")
        both = {d.id for d in self.upsert} & set(self.delete)
        if both:
            raise ValueError(f"ids both upserted and deleted: {sorted(both)[:5]}")
        return self


class ProgressOut(BaseModel):
    chunks_done: int
    chunks_total: int


class JobOut(BaseModel):
    id: str
    tenant: str
    state: Literal["queued", "running", "succeeded", "failed", "reload_failed"] = Field(
        description="failed: nothing was published; reload_failed: index_version was published, but this "
        "replica could not switch to it and keeps serving the version it had (see error)"
    )
    documents: int
    deletes: int
    progress: ProgressOut
    index_version: str | None = Field(
        description="the version the job published (once succeeded or reload_failed)"
    )
    report: dict[str, Any] | None
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    rollout: VersionRolloutOut | None = Field(
        None,
        description="once published: which live replicas serve index_version (or newer) already; "
        "complete when every one does",
    )


class VersionRolloutOut(BaseModel):
    version: str
    live_replicas: int = Field(description="replicas whose lease is live (RAG_REPLICA_LEASE_S)")
    switched: int = Field(description="of those, how many serve this version or a newer one")
    waiting: list[str] = Field(description="the live replicas still on an older version")
    complete: bool
    completed_at: float | None = Field(
        None, description="once complete: when the last live replica switched (to this version or newer)"
    )


class VectorStoreOut(BaseModel):
    points: int = Field(description="the version served and the one it replaced (kept until the next switch)")
    holds_version: str | None = Field(description="the index version the store was last brought to")
    per_process: bool = Field(description="this process's own shard (embedded engine) or a shared collection")


class ReplicaOut(BaseModel):
    replica: str
    version: str | None = Field(description="the index version it serves")
    host: str
    pid: int
    started_at: float
    switched_at: float | None = Field(description="when it started serving version")
    renewed_at: float
    expires_at: float
    live: bool = Field(description="its lease is unexpired")


class IngestResponse(BaseModel):
    request_id: str
    job: JobOut
    status_url: str


class HealthOut(BaseModel):
    status: Literal["ok"]


class ReadyOut(BaseModel):
    ready: bool
    phase: str
    reason: str | None
    index_version: str | None
    embedder: str | None
    reranker: str | None
    reranker_refused: str | None = Field(
        None, description="why the configured reranker does not rerank this collection (rerank/unvalidated)"
    )


class CandidateOut(BaseModel):
    index_version: str = Field(description="the staged candidate collection's version (rag reembed --stage)")
    embedder: str = Field(description="the model it is embedded with")
    chunks: int
    created_at: str | None


class IndexOut(BaseModel):
    index_version: str = Field(description="the version this replica serves")
    published_version: str | None = Field(None, description="the newest published version (CURRENT)")
    documents: int
    chunks: int
    documents_per_tenant: dict[str, int]
    created_at: str | None
    vector_store: VectorStoreOut | None = Field(None, description="this replica's vector store")
    replicas: list[ReplicaOut] = Field(
        default_factory=list,
        description="every serving process of this collection with a lease on record, and the version it "
        "serves (rag/index/replica_leases.py)",
    )
    candidate: CandidateOut | None = Field(
        None,
        description="a new embedder staged beside the collection, shadowed and A/B-served through the flag "
        "candidate_index until `rag reembed --promote` or --discard (rag/candidates.py); null: none",
    )
