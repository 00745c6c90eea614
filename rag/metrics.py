"""Every Prometheus metric the service exports, defined in one place.

Labels are bounded: routes are the app's route templates, tenants are the configured tenants, steps and
reasons come from the pipeline's fixed vocabulary. Query text and ids never become labels.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.4, 0.6, 1.0, 1.5, 2.5, 5.0, 10.0)
STEP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

HTTP_REQUESTS = Counter(
    "rag_http_requests_total",
    "HTTP requests by route template, method and status code.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "rag_http_request_duration_seconds",
    "HTTP request latency by route template.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
QUERIES = Counter(
    "rag_queries_total",
    "Queries answered, by tenant, route (pipeline) and outcome.",
    ["tenant", "route", "status"],
)
QUERY_LATENCY = Histogram(
    "rag_query_duration_seconds",
    "Time to answer a query, by route (pipeline).",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
STEP_LATENCY = Histogram(
    "rag_step_duration_seconds", "Pipeline step latency.", ["step"], buckets=STEP_BUCKETS
)
INFLIGHT = Gauge("rag_inflight_queries", "Queries being answered now.")
DEGRADATIONS = Counter(
    "rag_degradations_total", "Answers served with a step degraded, by step and reason.", ["step", "reason"]
)
RATE_LIMITED = Counter("rag_rate_limited_total", "Requests refused by the per-tenant rate limit.", ["tenant"])
RERANK_PAIRS = Counter(
    "rag_rerank_pairs_total", "(query, passage) pairs scored by the cross-encoder.", ["tenant"]
)
MODEL_BATCH_SIZE = Histogram(
    "rag_model_batch_items",
    "Items per micro-batched model call (queries embedded, pairs reranked).",
    ["model"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)
INGEST_JOBS = Counter("rag_ingest_jobs_total", "Ingest jobs by final state.", ["state"])
INDEX_INFO = Gauge("rag_index_chunks", "Chunks in the index version being served.")
READY = Gauge("rag_ready", "1 when the service is ready to answer queries.")
BREAKER_STATE = Gauge(
    "rag_breaker_state", "1 for each breaker's current state (closed, open, half-open).", ["breaker", "state"]
)
BREAKER_TRANSITIONS = Counter(
    "rag_breaker_transitions_total", "Breaker state transitions.", ["breaker", "from_state", "to_state"]
)
CACHE_LOOKUPS = Counter(
    "rag_cache_lookups_total",
    "Query cache lookups by level (l1 exact, l2 semantic) and result (hit, miss, error).",
    ["level", "result"],
)
CACHE_COALESCED = Counter(
    "rag_cache_coalesced_total", "Queries that waited for an identical query in flight (single-flight)."
)
LLM_REQUESTS = Counter("rag_llm_requests_total", "Answer synthesis calls by outcome.", ["status"])
