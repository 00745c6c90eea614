"""Every Prometheus metric the service exports, defined in one place.

Labels are bounded: routes are the app's route templates, tenants are the configured tenants, steps and
reasons come from the pipeline's fixed vocabulary (:mod:`rag.types`). Query text and ids never become
labels.

Multi-process mode (``rag serve --workers N``): with ``PROMETHEUS_MULTIPROC_DIR`` set before this module
is imported, every worker writes its samples there and ``/metrics`` aggregates them
(:func:`exposition`); each gauge says how (``multiprocess_mode``).
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from rag.types import CacheLevel, Dependency

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
    "Queries by tenant, route (pipeline), outcome (ok, degraded, error, cancelled) and cache result "
    f"({', '.join(CacheLevel)}; none when no answer).",
    ["tenant", "route", "status", "cache"],
)
ERRORS = Counter(
    "rag_errors_total",
    f"Failures by component ({', '.join(Dependency)}, api) and type (error, timeout, "
    "breaker_open, or the exception class for unhandled API errors).",
    ["component", "type"],
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
QUEUE_WAIT = Histogram(
    "rag_queue_wait_seconds",
    "Time a step waited in a queue before its call started (embed, rerank: the model threads; cpu: the "
    "CPU pool). Load, not a dependency's slowness: it never counts against a breaker.",
    ["queue"],
    buckets=STEP_BUCKETS,
)
LOOP_LAG = Gauge(
    "rag_event_loop_lag_seconds",
    "How late the event loop runs (a running estimate): a finished step waits this long before its "
    "request moves on. Admission control adds it to every step's queue wait.",
    multiprocess_mode="max",
)
INFLIGHT = Gauge("rag_inflight_queries", "Queries being answered now.", multiprocess_mode="livesum")
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
INDEX_INFO = Gauge("rag_index_chunks", "Chunks in the index version being served.", multiprocess_mode="max")
INDEX_VERSION = Gauge(
    "rag_index_version",
    "Number of the index version this process serves (v000007 → 7): replicas that disagree for long are "
    "not following the published version.",
    multiprocess_mode="liveall",
)
INDEX_SWITCHES = Counter(
    "rag_index_switches_total",
    "Index versions this process switched to while serving (its own ingest's, or another's it followed).",
)
REPLICA_LEASE_LAPSES = Counter(
    "rag_replica_lease_lapses_total",
    "Times this replica found its lease had expired before it renewed it (its vector shard is then checked "
    "in full against the version it serves).",
)
READY = Gauge("rag_ready", "1 when the service is ready to answer queries.", multiprocess_mode="livemin")
BREAKER_STATE = Gauge(
    "rag_breaker_state",
    "1 for each breaker's current state (closed, open, half-open).",
    ["breaker", "state"],
    multiprocess_mode="max",
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
ACL_WITHHELD = Counter(
    "rag_acl_withheld_total",
    "Results withheld by the last ACL check of an answer (a caller may not see them): always 0 unless a bug "
    "let one through the retrievers or the cache.",
)
LLM_REQUESTS = Counter("rag_llm_requests_total", "Answer synthesis calls by outcome.", ["status"])

# -- routing, cost, budgets ---------------------------------------------------------------------------
ROUTER_DECISIONS = Counter(
    "rag_router_decisions_total",
    "Plans chosen by the router, by arm, policy (rules, bandit) and query complexity.",
    ["arm", "policy", "complexity"],
)
STEP_CPU = Gauge(
    "rag_step_cpu_seconds_per_unit",
    "Running average of CPU time per unit of work of a step (per query, per embedded text, per pair).",
    ["step"],
    multiprocess_mode="max",
)
COST_CPU = Counter(
    "rag_cost_cpu_seconds_total", "CPU time spent answering, by step and tenant.", ["step", "tenant"]
)
COST_MONEY = Counter(
    "rag_cost_total",
    "Money spent answering (unit prices, the rollout config's currency).",
    ["step", "tenant"],
)
QUERY_COST = Histogram(
    "rag_query_cost",
    "Money per computed query, by router arm.",
    ["arm"],
    buckets=(1e-6, 1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2),
)
BUDGET_PRESSURE = Gauge(
    "rag_budget_pressure",
    "Spend over the last hour / the tightest budget.",
    ["tenant"],
    multiprocess_mode="max",
)
BUDGET_EXCEEDED = Counter(
    "rag_budget_exceeded_total", "Queries past a hard budget, by the action taken.", ["tenant", "action"]
)

# -- rollout: flags, A/B, shadow, auto-fallback, config -------------------------------------------------
ROLLOUT_ASSIGNMENTS = Counter(
    "rag_rollout_assignments_total", "Requests by feature flag and variant served.", ["flag", "variant"]
)
ROLLOUT_CONFIG = Gauge(
    "rag_rollout_config_info",
    "1 for the rollout config version serving.",
    ["version"],
    multiprocess_mode="max",
)
CONFIG_RELOADS = Counter("rag_rollout_config_reloads_total", "Rollout config reloads by result.", ["result"])
FALLBACK_TRIPPED = Gauge(
    "rag_fallback_tripped",
    "1 while a flag's candidate path is switched back to the baseline.",
    ["tenant", "flag"],
    multiprocess_mode="max",
)
FALLBACK_EVENTS = Counter("rag_fallback_events_total", "Auto-fallback trips and resets.", ["flag", "kind"])
SHADOW_RUNS = Counter(
    "rag_shadow_runs_total", "Shadow runs of the candidate plan by outcome.", ["flag", "status"]
)
SHADOW_OVERLAP = Histogram(
    "rag_shadow_overlap_at_10",
    "Top-10 overlap between the served and the shadow ranking.",
    ["flag"],
    buckets=(0.0, 0.2, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
)
SHADOW_RANK_CORR = Histogram(
    "rag_shadow_rank_correlation",
    "Kendall tau-b between the served and the shadow top 10.",
    ["flag"],
    buckets=(-0.5, 0.0, 0.25, 0.5, 0.75, 0.9, 1.0),
)
SHADOW_LATENCY_DELTA = Histogram(
    "rag_shadow_latency_delta_seconds",
    "Shadow minus served latency.",
    ["flag"],
    buckets=(-1.0, -0.25, -0.1, -0.025, 0.0, 0.025, 0.1, 0.25, 1.0, 2.5),
)
SHADOW_COST_DELTA = Histogram(
    "rag_shadow_cost_delta",
    "Shadow minus served money per request (negative: the candidate is cheaper).",
    ["flag"],
    buckets=(-1e-3, -1e-4, -1e-5, 0.0, 1e-5, 1e-4, 1e-3),
)

SHADOW_JUDGED = Counter(
    "rag_shadow_judged_total",
    "Shadowed requests whose feedback judged documents, by which ranking it scored higher "
    "(outcome: candidate, served, tie).",
    ["flag", "outcome"],
)
SHADOW_JUDGED_QUALITY = Counter(
    "rag_shadow_judged_quality",
    "Sum of the feedback quality (nDCG@10 of the graded relevance, else the clicks' reciprocal rank) of each "
    "judged shadowed request's served and candidate ranking; divide by rag_shadow_judged_total.",
    ["flag", "side"],
)

# -- feedback and the bandit ---------------------------------------------------------------------------
FEEDBACK = Counter("rag_feedback_total", "Feedback applied to the bandit, by the arm that served.", ["arm"])
BANDIT_REWARD = Histogram(
    "rag_bandit_reward",
    "Net reward (quality - cost weight x CPU-seconds) per feedback.",
    ["arm"],
    buckets=(-0.5, 0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0),
)


# -- background work -------------------------------------------------------------------------------------
BACKGROUND_ERRORS = Counter(
    "rag_background_errors_total",
    "Errors and malformed values that background work logged and skipped (the loop went on), by loop: "
    "breaker_sync, spend_sync, rollout_config, bandit_store.",
    ["loop"],
)


def exposition() -> tuple[bytes, str]:
    """The ``/metrics`` body and content type: this process's registry, or every worker's samples
    aggregated when ``PROMETHEUS_MULTIPROC_DIR`` is set (multi-process mode)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
