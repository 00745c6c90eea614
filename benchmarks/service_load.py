"""Load on `rag serve` over loopback with wrk: req/s, p50/p99 and server CPU-seconds per request.

Scenarios (each against a fresh server process, so one cannot warm the other):
  repeated     one query over and over: the cache path (one miss, then L1 hits)
  distinct-c1  distinct SciFact test queries one at a time (one-by-one)
  distinct-cN  the same queries from N concurrent connections, micro-batching on
  nobatch-cN   the same, micro-batching off (each request's model call runs alone)

The index must already hold the corpus for --tenant (e.g. `RAG_DATA_DIR=... rag ingest DIR --tenant bench`).
wrk and the server share the machine's cores; wrk's own CPU is reported next to the server's.

    python benchmarks/service_load.py --data-dir /work/ragbench --collection scifact \
        --queries ../shared/data/scifact --duration 20
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results

KEY = "bench-key-0123456789abcdef"
ADMIN = "bench-admin-0123456789abcdef"
CLK_TCK = os.sysconf("SC_CLK_TCK")

WRK_SCRIPT = """
local bodies = {%s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("POST", "/query", {["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer %s"}, bodies[(n %% #bodies) + 1])
end
"""


def lua_string(s: str) -> str:
    return "[==[" + s + "]==]"


def cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every live descendant (``rag serve --workers N``: the workers)."""
    total = 0.0
    for proc in [pid, *descendants(pid)]:
        try:
            fields = Path(f"/proc/{proc}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime
    return total


def descendants(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += [child, *descendants(child)]
    return found


def start_server(
    args: argparse.Namespace, port: int, extra_env: dict[str, str], workers: int = 1
) -> subprocess.Popen[bytes]:
    """``rag serve`` (``--workers`` when more than one), once every worker is ready."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {
        "RAG_DATA_DIR": args.data_dir,
        "RAG_COLLECTION": args.collection,
        "RAG_API_KEYS": f"{args.tenant}:{KEY}",
        "RAG_ADMIN_TOKEN": ADMIN,
        "RAG_RATE_LIMIT_QPS": "0",
        "RAG_LOG_LEVEL": "WARNING",
        "RAG_PORT": str(port),
        **extra_env,
    }
    if args.reranker:
        env["RAG_RERANKER_MODEL"] = args.reranker
    process = subprocess.Popen([sys.executable, "-m", "rag", "serve", "--workers", str(workers)], env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200 and live_replicas(port) >= workers:
                    return process
        except OSError:
            pass
        if process.poll() is not None:
            raise RuntimeError("rag serve exited during start-up")
        time.sleep(0.5)
    process.kill()
    raise TimeoutError("rag serve did not become ready")


def parse_wrk(out: str) -> dict[str, float]:
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    latency = dict(
        (p, ms(v, u)) for p, v, u in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    )
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    return {
        "requests": requests,
        "req_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": latency["50"],
        "p90_ms": latency["90"],
        "p99_ms": latency["99"],
        "non_2xx": int(errors.group(1)) if errors else 0,
        "timeouts": int(timeouts.group(1)) if timeouts else 0,
    }


def live_replicas(port: int) -> int:
    """How many serving processes list a live lease on the collection (each worker is one)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/admin/index", headers={"Authorization": f"Bearer {ADMIN}"}
    )
    with urllib.request.urlopen(request, timeout=2) as r:
        return sum(1 for replica in json.load(r)["replicas"] if replica["live"])


def run_scenario(
    args: argparse.Namespace,
    name: str,
    bodies: list[str],
    connections: int,
    env: dict[str, str],
    workers: int = 1,
) -> dict[str, Any]:
    port = 8700 + abs(hash(name)) % 200
    server = start_server(args, port, env, workers)
    try:
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
            fh.write(WRK_SCRIPT % (",".join(lua_string(b) for b in bodies), KEY))
            script = fh.name
        url = f"http://127.0.0.1:{port}"
        wrk = ["wrk", "-t1", f"-c{connections}", "--latency", "--timeout", "60s", "-s", script, url]
        subprocess.run([*wrk[:-1], "-d3s", url], capture_output=True, check=True)  # warm-up
        server_cpu0, wrk_cpu0 = cpu_seconds(server.pid), children_cpu()
        timed = [*wrk[:-1], f"-d{args.duration}s", url]
        out = subprocess.run(timed, capture_output=True, text=True, check=True)
        server_cpu, wrk_cpu = cpu_seconds(server.pid) - server_cpu0, children_cpu() - wrk_cpu0
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)
    result = parse_wrk(out.stdout)
    result |= {
        "scenario": name,
        "connections": connections,
        "workers": workers,
        "server_cpu_ms_per_request": 1000 * server_cpu / max(result["requests"], 1),
        "wrk_cpu_ms_per_request": 1000 * wrk_cpu / max(result["requests"], 1),
        "server_cpu_utilisation": server_cpu / args.duration,
    }
    print(json.dumps(result), flush=True)
    return result


def children_cpu() -> float:
    """CPU seconds of this process's finished children (the load generator)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def index_arguments(description: str | None) -> argparse.ArgumentParser:
    """The arguments every wrk scenario script takes: the index, the tenant, the queries, the duration."""
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--queries", required=True, help="BEIR folder whose test queries are sent")
    parser.add_argument("--duration", type=int, default=20)
    return parser


def beir_test_queries(folder: Path) -> list[str]:
    """The texts of a BEIR folder's test queries (those with qrels in ``qrels/test.tsv``)."""
    test_ids = {line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    return [q["text"] for q in queries if q["_id"] in test_ids]


def main() -> None:
    parser = index_arguments(__doc__)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--reranker", help="RAG_RERANKER_MODEL for the run (default: none, route hybrid)")
    parser.add_argument("--rerank-depth", type=int, default=None)
    parser.add_argument("--name", default="service_load")
    args = parser.parse_args()

    texts = beir_test_queries(Path(args.queries))
    distinct = [json.dumps({"query": t, "top_k": 10}) for t in texts]
    repeated = [json.dumps({"query": texts[0], "top_k": 10})]  # one miss, then L1 cache hits
    # a generous deadline: this measures throughput, not how many answers the 500 ms default degrades
    env: dict[str, str] = {"RAG_DEADLINE_MS": "10000"}
    if args.rerank_depth is not None:
        env["RAG_RERANK_DEPTH"] = str(args.rerank_depth)
    n = args.concurrency
    uncached = env | {"RAG_CACHE_ENABLED": "false"}
    runs = [
        run_scenario(args, "repeated", repeated, n, env),
        # the distinct queries cycle: with the cache on, the second pass would be L1 hits
        run_scenario(args, "distinct-c1", distinct, 1, uncached),
        run_scenario(args, f"distinct-c{n}", distinct, n, uncached),
        run_scenario(args, f"nobatch-c{n}", distinct, n, uncached | {"RAG_MICRO_BATCHING": "false"}),
    ]
    by = {r["scenario"]: r for r in runs}
    speedup = by[f"distinct-c{n}"]["req_per_s"] / by["distinct-c1"]["req_per_s"]
    batching_gain = by[f"distinct-c{n}"]["req_per_s"] / by[f"nobatch-c{n}"]["req_per_s"]
    rows = "\n".join(
        f"| {r['scenario']} | {r['connections']} | {r['req_per_s']:.1f} | {r['p50_ms']:.1f} "
        f"| {r['p99_ms']:.1f} | {r['server_cpu_ms_per_request']:.2f} "
        f"| {r['wrk_cpu_ms_per_request']:.3f} | {r['non_2xx']} |"
        for r in runs
    )
    route = "hybrid-rerank" if args.reranker else "hybrid"
    reranker_arg = f" --reranker {args.reranker}" if args.reranker else ""
    markdown = f"""# `rag serve` under wrk (loopback, 2 cores shared by server and wrk)

Index: {args.collection} (tenant `{args.tenant}`), route `{route}`, {len(texts)} distinct SciFact test
queries, {args.duration} s per scenario after a 3 s warm-up, a fresh server per scenario.

| scenario | connections | req/s | p50 ms | p99 ms | server CPU ms/req | wrk CPU ms/req | non-2xx |
|---|---|---|---|---|---|---|---|
{rows}

- {n} concurrent distinct queries vs one-by-one: **{speedup:.2f}x** the throughput.
- micro-batching on vs off at {n} connections: **{batching_gain:.2f}x**.
- CPU ms/req is process CPU time (all threads) over requests served; 2 cores = 2000 ms of CPU per second.

Reproduce: `python benchmarks/service_load.py --data-dir DIR --collection {args.collection} \\
  --queries ../shared/data/scifact --duration {args.duration}{reranker_arg}`
"""
    write_results(
        args.name,
        {
            "runs": runs,
            "speedup_concurrent_vs_one_by_one": speedup,
            "batching_gain": batching_gain,
            "route": route,
            "duration_s": args.duration,
        },
        markdown,
    )


if __name__ == "__main__":
    main()
