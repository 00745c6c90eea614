"""How long a publish takes to reach every replica: N `rag serve` on one data dir, one of them ingests.

For each of ``--publishes`` one-document ingests through replica 1's admin route, the time from its answer
(the version published and replica 1 switched) until each other replica's ``GET /admin/index`` reports the
new version (polled every 10 ms). Two modes, the same index copied fresh for each: with Redis (a publish is
announced on pub/sub, followers check at once) and without (followers poll ``CURRENT`` every
``RAG_VERSION_POLL_MS``, default 500 ms). What a switch costs (the shard brought to the version, the
snapshot and BM25 built) is in both.

    python benchmarks/follow_latency.py --data-dir DIR --collection scifact [--replicas 3 --publishes 10]

``DIR`` is an index built by ``rag ingest`` (copied to a temporary folder first; not changed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import ExitStack
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _common import write_results

from rag.testing.servers import free_port, redis_server

ADMIN = "bench-admin-0123456789abcdef"


def call(url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        url,
        data=data,
        headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        method="POST" if body is not None else "GET",
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        result: dict[str, Any] = json.load(r)
        return result


def start(
    data_dir: Path, collection: str, port: int, name: str, redis_url: str | None
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {
        "RAG_DATA_DIR": str(data_dir),
        "RAG_COLLECTION": collection,
        "RAG_ADMIN_TOKEN": ADMIN,
        "RAG_API_KEYS": "bench:bench-key-0123456789abcdef",
        "RAG_REPLICA_ID": name,
        "RAG_LOG_LEVEL": "WARNING",
        "RAG_PORT": str(port),
    }
    if redis_url:
        env["RAG_REDIS_URL"] = redis_url
    return subprocess.Popen([sys.executable, "-m", "rag", "serve"], env=env)


def wait_ready(port: int, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"replica on {port} not ready")


def run_mode(args: argparse.Namespace, redis_url: str | None) -> list[float]:
    """Seconds from each publish's answer to each follower serving it."""
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        shutil.copytree(args.data_dir, data_dir)
        ports = [free_port() for _ in range(args.replicas)]
        procs = [
            start(data_dir, args.collection, port, f"r{i + 1}", redis_url) for i, port in enumerate(ports)
        ]
        lags: list[float] = []
        try:
            for port in ports:
                wait_ready(port)
            time.sleep(2)  # every follower subscribed and past its first lease
            for n in range(args.publishes):
                doc = {"id": f"follow-{n}", "text": f"follow latency probe number {n} zyx{n}"}
                answer = call(f"http://127.0.0.1:{ports[0]}/admin/tenants/bench/documents", {"upsert": [doc]})
                published_at = time.monotonic()
                version = answer["job"]["index_version"]
                waiting = set(ports[1:])
                while waiting:
                    for port in list(waiting):
                        if call(f"http://127.0.0.1:{port}/admin/index")["index_version"] == version:
                            lags.append(time.monotonic() - published_at)
                            waiting.discard(port)
                    if time.monotonic() - published_at > 60:
                        raise TimeoutError(f"{version} not followed in 60 s")
                    time.sleep(0.01)
                time.sleep(args.pause)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    return lags


def summary(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {
        "n": len(ordered),
        "p50_ms": 1000 * statistics.median(ordered),
        "p90_ms": 1000 * ordered[int(0.9 * (len(ordered) - 1))],
        "max_ms": 1000 * ordered[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--collection", required=True)
    parser.add_argument("--replicas", type=int, default=3)
    parser.add_argument("--publishes", type=int, default=10)
    parser.add_argument("--pause", type=float, default=1.0, help="seconds between publishes")
    parser.add_argument("--name", default="follow_latency")
    args = parser.parse_args()

    with ExitStack() as stack:
        redis = stack.enter_context(redis_server(Path(tempfile.mkdtemp()) / "redis"))
        announced = summary(run_mode(args, redis.url))
    polled = summary(run_mode(args, None))
    rows = "\n".join(
        f"| {mode} | {s['n']} | {s['p50_ms']:.0f} | {s['p90_ms']:.0f} | {s['max_ms']:.0f} |"
        for mode, s in (("Redis announcement (+ poll)", announced), ("poll only (500 ms)", polled))
    )
    markdown = f"""# A publish reaching every replica ({args.replicas} `rag serve` on one data dir, 2 cores)

Index: a copy of `{args.collection}`; {args.publishes} one-document ingests through replica 1, {args.pause} s
apart; the time from replica 1's answer until each other replica's `/admin/index` shows the new version
(each replica brings its own vector shard to it and builds the snapshot and BM25 first).

| followers learn of a publish by | switches | p50 ms | p90 ms | max ms |
|---|---|---|---|---|
{rows}

Reproduce: `python benchmarks/follow_latency.py --data-dir DIR --collection {args.collection} \\
  --replicas {args.replicas} --publishes {args.publishes}`
"""
    write_results(args.name, {"announced": announced, "polled": polled, "args": vars(args)}, markdown)


if __name__ == "__main__":
    main()
