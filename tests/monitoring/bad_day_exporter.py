"""A stand-in for the service's /metrics on a bad day, for the live Prometheus test.

It exports ``rag/metrics.py``'s own metric objects (so names and labels are the service's), every one
with samples, and keeps the counters moving so rates are non-zero: slow queries, 1 in 6 failing, a 1%
cache hit ratio, a high spend, too many queries in flight and the qdrant breaker open. Every alert of
``rules.fast.yml`` but RagServiceDown should fire; stopping this process makes that one fire too.

    python tests/monitoring/bad_day_exporter.py PORT INFLIGHT
"""

from __future__ import annotations

import sys
import time

from prometheus_client import start_http_server

from rag import metrics as m


def main() -> None:
    port, inflight = int(sys.argv[1]), float(sys.argv[2])
    m.INFLIGHT.set(inflight)
    for breaker, state in (("qdrant", "open"), ("reranker", "closed")):
        for s in ("closed", "open", "half-open"):
            m.BREAKER_STATE.labels(breaker, s).set(1 if s == state else 0)
    m.FALLBACK_TRIPPED.labels("acme", "rerank").set(1)
    m.BUDGET_PRESSURE.labels("acme").set(0.5)
    m.READY.set(1)
    start_http_server(port, addr="127.0.0.1")
    while True:
        m.QUERIES.labels("acme", "hybrid", "ok", "miss").inc(4)
        m.QUERIES.labels("acme", "hybrid", "error", "none").inc()
        m.QUERIES.labels("acme", "bm25", "degraded", "l1").inc()
        m.HTTP_REQUESTS.labels("/query", "POST", "200").inc(5)
        m.HTTP_REQUESTS.labels("/query", "POST", "500").inc()
        m.HTTP_LATENCY.labels("/query").observe(3.0)
        m.QUERY_LATENCY.labels("hybrid").observe(3.0)
        m.STEP_LATENCY.labels("rerank").observe(0.2)
        m.QUEUE_WAIT.labels("embed").observe(0.3)
        m.CACHE_LOOKUPS.labels("l1", "hit").inc(0.01)
        m.CACHE_LOOKUPS.labels("l1", "miss").inc()
        m.CACHE_LOOKUPS.labels("l2", "miss").inc()
        m.CACHE_COALESCED.inc()
        m.COST_MONEY.labels("rerank", "acme").inc(0.01)  # 0.05 per second: 180 per hour
        m.COST_CPU.labels("rerank", "acme").inc(0.1)
        m.QUERY_COST.labels("hybrid-rerank").observe(0.0005)
        m.ROUTER_DECISIONS.labels("hybrid-rerank", "rules", "complex").inc()
        m.DEGRADATIONS.labels("dense", "breaker_open").inc()
        m.ERRORS.labels("qdrant", "breaker_open").inc()
        m.LLM_REQUESTS.labels("ok").inc()
        m.RATE_LIMITED.labels("acme").inc()
        m.BREAKER_TRANSITIONS.labels("qdrant", "half-open", "open").inc()
        m.ROLLOUT_ASSIGNMENTS.labels("rerank", "candidate").inc()
        m.SHADOW_RUNS.labels("rerank", "ok").inc()
        m.SHADOW_OVERLAP.labels("rerank").observe(0.8)
        m.SHADOW_JUDGED.labels("candidate_index", "candidate").inc()
        m.SHADOW_JUDGED_QUALITY.labels("candidate_index", "served").inc(0.6)
        m.SHADOW_JUDGED_QUALITY.labels("candidate_index", "candidate").inc(0.7)
        time.sleep(0.2)


if __name__ == "__main__":
    main()
