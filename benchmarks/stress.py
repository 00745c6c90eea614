"""Stress profile: N queries (default 5000) from U locust users (default 200) against `rag serve`.

Starts `rag serve` on an existing index (like service_load.py), warms it with a few queries, then runs
benchmarks/load/locustfile.py headless until N query requests were made (LOAD_MAX_REQUESTS; locust has no
iteration limit of its own) or --max-time passed. The users send the locustfile's mix: Zipf-popular
queries (the cache path), paraphrases of them (L2), novel queries from the BEIR folder (computed), the same
streamed, and feedback, with no think time by default (a closed loop: the offered load is what the
server can take, and latency = users / throughput).

Reports QPS, p50/p95/p99, the failure ratio, cache outcomes per kind of query, server CPU-seconds per
request (from /proc, all threads) and locust's own CPU per request, the server's `rag stats` summary, and
a latency-over-time plot from locust's --csv-full-history history (locust's percentiles there are over
its last 10 s window).

locust (FastHttpUser, one gevent process, ~120 µs of CPU per request here vs ~20 µs for wrk) runs on the
same 2 cores as the server and competes with it: its CPU is reported next to the server's.

    python benchmarks/stress.py --data-dir /work/ragbench --collection scifact --tenant bench \
        --queries ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, write_results
from benchmarks.service_load import KEY, children_cpu, cpu_seconds, start_server
from rag.config import Settings

LOCUSTFILE = Path(__file__).resolve().parent / "load" / "locustfile.py"


def ask(url: str, text: str) -> int:
    """POST one query; its status (a cold server's first answers can miss the deadline: 503)."""
    request = urllib.request.Request(
        f"{url}/query",
        data=json.dumps({"query": text, "top_k": 10}).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as exc:
        if exc.code != 503:
            raise
        return exc.code


def warm_up(url: str, queries: list[str], at_least: int = 30) -> int:
    """Ask ``queries`` one by one, ``at_least`` of them, then more a second apart until one is answered
    with every breaker closed (a fresh model's first calls are slow: some miss the deadline, and enough
    slow calls in a row open the embedder's breaker; past its open period a computed query probes it).
    Returns how many were asked."""
    from rag.ops.stats import fetch

    for asked, text in enumerate(queries, start=1):
        if ask(url, text) != 200 or asked < at_least:
            continue
        states = fetch(url).series("rag_breaker_state")
        if not [labels for labels, value in states if value == 1 and labels.get("state") != "closed"]:
            return asked
        time.sleep(1.0)
    raise TimeoutError(f"a breaker was still open after {len(queries)} warm-up queries")


def _float(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None  # "N/A"


def read_history(prefix: Path) -> list[dict[str, float | None]]:
    """The Aggregated rows of --csv-full-history, seconds since the first one."""
    out: list[dict[str, float | None]] = []
    with open(f"{prefix}_stats_history.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["Name"] == "Aggregated"]
    t0 = float(rows[0]["Timestamp"]) if rows else 0.0
    for r in rows:
        out.append(
            {
                "t_s": float(r["Timestamp"]) - t0,
                "users": _float(r["User Count"]),
                "req_per_s": _float(r["Requests/s"]),
                "p50_ms": _float(r["50%"]),
                "p95_ms": _float(r["95%"]),
                "p99_ms": _float(r["99%"]),
            }
        )
    return out


def plot(history: list[dict[str, float | None]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def column(key: str) -> list[float]:
        return [math.nan if h[key] is None else float(h[key]) for h in history]  # type: ignore[arg-type]

    fig, ax = plt.subplots(figsize=(9, 4.5))
    t = column("t_s")
    for key, label in (("p50_ms", "p50"), ("p95_ms", "p95"), ("p99_ms", "p99")):
        ax.plot(t, column(key), label=label)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("latency, ms (locust, last 10 s window)")
    ax.set_title(title)
    right = ax.twinx()
    right.plot(t, column("req_per_s"), color="grey", linestyle="--", label="req/s")
    right.set_ylabel("requests / s")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_outcomes(before: Any, after: Any) -> dict[str, Any]:
    """What the server did during the run (two scrapes of its metrics): answers by status (goodput =
    ``ok``, full answers), the share of queries with each degradation (by step and reason), and the
    breakers' transitions — a pure overload run with healthy dependencies must open none."""

    def delta(name: str, *keys: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for scrape, sign in ((after, 1.0), (before, -1.0)):
            for labels, value in scrape.series(name):
                key = ": ".join(labels.get(k, "?") for k in keys)
                out[key] = out.get(key, 0.0) + sign * value
        return {k: v for k, v in out.items() if v}

    answers = delta("rag_queries_total", "status")
    queries = sum(answers.values()) or 1.0
    degraded = delta("rag_degradations_total", "step", "reason")
    transitions = delta("rag_breaker_transitions_total", "breaker", "from_state", "to_state")
    return {
        "answers_by_status": answers,
        "degraded_share": {k: v / queries for k, v in sorted(degraded.items(), key=lambda kv: -kv[1])},
        "breaker_transitions": transitions,
        "breakers_opened": sum(v for k, v in transitions.items() if k.endswith(": open")),
    }


def run_locust(args: argparse.Namespace, url: str, workdir: Path) -> tuple[int, float, float, dict[str, Any]]:
    """locust's exit code, its process's wall and CPU seconds, and the locustfile's LOAD_REPORT."""
    report = workdir / "load_report.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOAD_")} | {
        "LOAD_API_KEY": KEY,
        "LOAD_QUERIES": args.queries,
        "LOAD_MAX_REQUESTS": str(args.requests),
        "LOAD_WAIT_S": args.wait,
        "LOAD_REPORT": str(report),
        "LOAD_MAX_FAIL_RATIO": str(args.max_fail_ratio),
        "LOAD_MAX_P95_MS": str(args.max_p95_ms),
    }
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
    command += ["-u", str(args.users), "-r", str(args.spawn_rate), "-t", f"{args.max_time}s", "--host", url]
    command += [
        "--csv",
        str(workdir / "stress"),
        "--csv-full-history",
    ]  # for the history; totals: LOAD_REPORT
    cpu0, t0 = children_cpu(), time.monotonic()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=args.max_time + 120)
    wall, cpu = time.monotonic() - t0, children_cpu() - cpu0
    print(done.stderr[-4000:], file=sys.stderr)
    return done.returncode, wall, cpu, json.loads(report.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--tenant", default="bench")
    parser.add_argument("--queries", required=True, help="BEIR folder whose queries the users send")
    parser.add_argument("--requests", type=int, default=5000, help="query requests to make (default 5000)")
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--spawn-rate", type=float, default=50, help="users started per second")
    parser.add_argument("--wait", default="0", help="think time, LOAD_WAIT_S ('MIN,MAX' or one number)")
    parser.add_argument("--max-time", type=int, default=240, help="stop after this many seconds regardless")
    parser.add_argument("--max-fail-ratio", type=float, default=0.01)
    parser.add_argument("--max-p95-ms", type=float, default=2000)
    parser.add_argument("--deadline-ms", type=int, help="RAG_DEADLINE_MS for the server (default: its own)")
    parser.add_argument("--port", type=int, default=8911)
    parser.add_argument("--name", default="stress")
    args = parser.parse_args()
    args.reranker = None  # start_server's option: the stress profile serves the default hybrid route

    folder = Path(args.queries)
    lines = (folder / "queries.jsonl").read_text().splitlines()
    warm = [json.loads(line)["text"] for line in lines[-90:]]  # distinct: each one is computed
    extra = {"RAG_DEADLINE_MS": str(args.deadline_ms)} if args.deadline_ms else {}
    server = start_server(args, args.port, extra)
    url = f"http://127.0.0.1:{args.port}"
    try:
        warmed_with = warm_up(url, warm)
        from rag.ops.stats import collect, fetch, render

        before = fetch(url)
        server_cpu0 = cpu_seconds(server.pid)
        with tempfile.TemporaryDirectory() as tmp:
            workdir = Path(tmp)
            code, wall, locust_cpu, load = run_locust(args, url, workdir)
            server_cpu = cpu_seconds(server.pid) - server_cpu0
            history = read_history(workdir / "stress")
        server_stats = collect(url)
        during = run_outcomes(before, fetch(url))
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(timeout=30)

    stats = load["by_name"]
    total = next(r for r in stats if r["name"] == "Aggregated")
    requests = max(total["requests"], 1)
    locust_test_cpu = load["locust_cpu_s"]  # from the test's start: locust's own start-up left out
    summary = {
        "requests": total["requests"],
        "query_requests": sum(r["requests"] for r in stats if r["name"].startswith("/query")),
        "users": args.users,
        "duration_s": load["duration_s"],
        "locust_process_wall_s": wall,
        "qps": total["req_per_s"],
        "p50_ms": total["p50_ms"],
        "p95_ms": total["p95_ms"],
        "p99_ms": total["p99_ms"],
        "max_ms": total["max_ms"],
        "fail_ratio": total["failures"] / requests,
        "rate_limited": load["rate_limited"],
        "server_cpu_s": server_cpu,
        "locust_cpu_s": locust_test_cpu,
        "locust_process_cpu_s": locust_cpu,  # the whole locust process, start-up included
        "server_cpu_ms_per_request": 1000 * server_cpu / requests,
        "locust_cpu_ms_per_request": 1000 * locust_test_cpu / requests,
        "locust_over_server_cpu": locust_test_cpu / server_cpu if server_cpu else None,
        "cpu_utilisation": (server_cpu + locust_cpu) / (wall * (os.cpu_count() or 2)),
        "warm_up_queries": warmed_with,
        "locust_exit_code": code,
        "thresholds_passed": load["passed"],
        "during_run": during,
        "threshold_reasons": load["reasons"],
    }
    plot(
        history,
        RESULTS / f"{args.name}.png",
        f"{args.requests} queries, {args.users} users, {args.collection}",
    )

    by_kind = "\n".join(
        f"| {r['name']} | {r['requests']} | {r['failures']} | {r['req_per_s']:.1f} | {r['p50_ms']:.0f} "
        f"| {r['p95_ms']:.0f} | {r['p99_ms']:.0f} |"
        for r in stats
    )
    cache_rows = "\n".join(
        f"| {kind} | " + " | ".join(str(counts.get(c, 0)) for c in ("l1", "l2", "coalesced", "miss")) + " | "
        f"{load['degraded_by_kind'].get(kind, 0)} |"
        for kind, counts in load["cache_by_kind"].items()
    )
    s = summary
    verdict = "passed" if s["thresholds_passed"] else "FAILED: " + "; ".join(s["threshold_reasons"])
    headline = (
        f"| {s['requests']} | {s['duration_s']:.1f} | {s['qps']:.1f} | {s['p50_ms']:.0f} | {s['p95_ms']:.0f} "
        f"| {s['p99_ms']:.0f} | {s['max_ms']:.0f} | {s['fail_ratio']:.2%} | {s['rate_limited']} |"
    )
    locust_us = 1000 * s["locust_cpu_ms_per_request"]
    cpu_rows = "\n".join(
        f"| {who} | {seconds:.1f} | {1000 * seconds / requests:.3f} |"
        for who, seconds in (
            ("server (all threads, /proc)", s["server_cpu_s"]),
            ("locust, from the test's start", s["locust_cpu_s"]),
            ("locust process, its start-up included", s["locust_process_cpu_s"]),
        )
    )
    deadline = args.deadline_ms or f"{Settings.model_fields['deadline_ms'].default} (the default)"
    reproduce = (
        f"python benchmarks/stress.py --data-dir DIR --collection {args.collection} --tenant {args.tenant} "
        f"\\\n  --queries {args.queries} --requests {args.requests} --users {args.users}"
    )
    during_text = {
        "answers": ", ".join(f"{k} {v:.0f}" for k, v in sorted(during["answers_by_status"].items())),
        "transitions": ", ".join(f"{k} ×{v:.0f}" for k, v in during["breaker_transitions"].items()) or "none",
        "degraded": "\n".join(f"| {k} | {v:.1%} |" for k, v in during["degraded_share"].items())
        or "| none | 0 |",
    }
    markdown = f"""# Stress: {s["query_requests"]} queries from {args.users} locust users

`rag serve` on the `{args.collection}` index (tenant `{args.tenant}`, route hybrid, per-query deadline
{deadline} ms), a fresh server warmed with {warmed_with} queries asked one by one until every breaker
was closed; locust headless,
`benchmarks/load/locustfile.py` mix with the SciFact queries (`{args.queries}`), think time `{args.wait}` s
(a closed loop), stopped after {args.requests} query requests (LOAD_MAX_REQUESTS) or {args.max_time} s.
Server and locust share the machine's {os.cpu_count()} cores.

| requests | seconds | QPS | p50 ms | p95 ms | p99 ms | max ms | fail ratio | 429s |
|---|---|---|---|---|---|---|---|---|
{headline}

| CPU | seconds | ms per request |
|---|---|---|
{cpu_rows}

- locust used **{s["locust_over_server_cpu"]:.1%}** of the server's CPU ({locust_us:.0f} µs per request;
  DESIGN.md's FastHttpUser figure is ≈ 120 µs, wrk's ≈ 20 µs): CPU the server did not get. Both together used
  {s["cpu_utilisation"]:.0%} of the {os.cpu_count()} cores over the run.
- Thresholds (fail ratio ≤ {args.max_fail_ratio:.0%}, p95 ≤ {args.max_p95_ms:g} ms; locust exit code
  {code}): **{verdict}**.
- Latency over time: `{args.name}.png` (locust's p50/p95/p99 over its last 10 s, and req/s).

Per request name (locust):

| name | requests | failures | req/s | p50 ms | p95 ms | p99 ms |
|---|---|---|---|---|---|---|
{by_kind}

Cache outcome of the answers, per kind of query (from the response bodies):

| kind | l1 | l2 | coalesced | miss | degraded |
|---|---|---|---|---|---|
{cache_rows}

What the server did during the run (its metrics, before and after; warm-up excluded):

- answers by status: {during_text["answers"]} (goodput: `ok`, full answers)
- breakers opened: **{during["breakers_opened"]:.0f}** (transitions: {during_text["transitions"]})
- degraded share by rung (share of queries with that step given up, a query may count in several):

| step: reason | share of queries |
|---|---|
{during_text["degraded"]}

The server's own view at the end (`rag stats {url}`, cumulative, warm-up included):

```
{render(server_stats)}
```

Reproduce: `{reproduce}`
"""
    write_results(
        args.name,
        {
            **summary,
            "by_name": stats,
            "load_report": load,
            "history": history,
            "server_stats": server_stats.as_dict(),
        },
        markdown,
    )


if __name__ == "__main__":
    main()
