"""One process or N workers (`rag serve --workers N`) on the embedded engine: req/s, server CPU per request.

Each worker holds its own vector shard and follows the published version (docs/architecture.md,
"Scale-out"); this measures what the extra processes buy on this machine, for the two shapes of load:

  repeated   one query over and over: L1 cache hits, all event-loop work (HTTP, auth, cache, JSON)
  distinct   distinct SciFact test queries, the cache off: the query embedding and the retrieval

Each scenario runs against a fresh server, 1 and then N workers, in the same session. The server's CPU is
the whole process tree's (the workers are children of uvicorn's supervisor). wrk shares the cores.

    python benchmarks/workers.py --data-dir DIR --collection scifact --queries ../shared/data/scifact
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results
from service_load import beir_test_queries, index_arguments, run_scenario


def main() -> None:
    parser = index_arguments(__doc__)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="workers")
    args = parser.parse_args()
    args.reranker = None

    texts = beir_test_queries(Path(args.queries))
    distinct = [json.dumps({"query": t, "top_k": 10}) for t in texts]
    repeated = [json.dumps({"query": texts[0], "top_k": 10})]
    env = {"RAG_DEADLINE_MS": "10000"}
    uncached = env | {"RAG_CACHE_ENABLED": "false"}
    runs = []
    for scenario, bodies, connections, scenario_env in (
        ("repeated", repeated, 64, env),
        ("distinct", distinct, 32, uncached),
    ):
        for workers in (1, args.workers):
            runs.append(
                run_scenario(args, f"{scenario}-w{workers}", bodies, connections, scenario_env, workers)
            )
    by = {r["scenario"]: r for r in runs}
    n = args.workers
    gains = {s: by[f"{s}-w{n}"]["req_per_s"] / by[f"{s}-w1"]["req_per_s"] for s in ("repeated", "distinct")}
    rows = "\n".join(
        f"| {r['scenario']} | {r['workers']} | {r['connections']} | {r['req_per_s']:.1f} | {r['p50_ms']:.1f} "
        f"| {r['p99_ms']:.1f} | {r['server_cpu_ms_per_request']:.2f} | {r['server_cpu_utilisation']:.2f} "
        f"| {r['wrk_cpu_ms_per_request']:.3f} | {r['non_2xx']} |"
        for r in runs
    )
    markdown = f"""# `rag serve` with 1 vs {n} workers, the embedded engine (2 cores shared with wrk)

Index: {args.collection} (tenant `{args.tenant}`), route `hybrid`, {len(texts)} distinct SciFact test
queries, {args.duration} s per scenario after a 3 s warm-up, a fresh server per scenario; CPU is the whole
process tree's ("cores busy": server CPU seconds per second).

| scenario | workers | conns | req/s | p50 ms | p99 ms | server CPU ms/req | cores busy | wrk ms | non-2xx |
|---|---|---|---|---|---|---|---|---|---|
{rows}

- cache hits (repeated): {n} workers give **{gains["repeated"]:.2f}x** the throughput of one process.
- distinct queries (cache off): **{gains["distinct"]:.2f}x**.

Reproduce: `python benchmarks/workers.py --data-dir DIR --collection {args.collection} \\
  --queries ../shared/data/scifact --duration {args.duration} --workers {args.workers}`
"""
    write_results(args.name, {"runs": runs, "gains": gains, "duration_s": args.duration}, markdown)


if __name__ == "__main__":
    main()
