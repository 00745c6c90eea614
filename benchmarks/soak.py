"""Soak: does the service's memory stay bounded under a stream of distinct queries?

20,000 distinct queries (default) with ``top_k=100`` and varied filters (none, one field, two fields; a
few hundred filter combinations, so the cache sees hundreds of namespaces per tenant), alternating two
tenants, through an in-process ``RetrievalService`` (the hash embedder: the run measures the cache and the
service's own structures, not a model). Halfway, an ingest per tenant publishes a new index version.
Run twice, each in a fresh process: with the cache in process only, and with a real ``redis-server``
(started like the tests do; ``maxmemory`` set, as production should) and ``RAG_CACHE_SECRET``.

Every 1,000 queries it records the process RSS (``/proc/self/statm``), what the cache holds
(``QueryCache.stats``) and Redis's ``used_memory``. The RSS bound it checks does not depend on the number
of queries; it is stated from the configured caps:

    RSS <= RSS_0 + k * RAG_CACHE_L1_MAX_BYTES + RAG_CACHE_L2_MAX_BYTES + ALLOWANCE

where ``RSS_0`` is the RSS once the index is loaded (before the first query), ``k`` is the measured ratio
of a cached answer's Python objects to its JSON length (L1 holds answers as dicts, accounted by JSON
length), and ``ALLOWANCE`` covers the other bounded structures and allocator slack. Writes
``benchmarks/results/soak.{json,md,png}``.

    python benchmarks/soak.py                  # both modes, 20,000 queries each
    python benchmarks/soak.py --queries 4000   # while developing
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import asdict
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import RESULTS, write_results

MIB = 1024 * 1024
ALLOWANCE = 64 * MIB
TENANTS = ("acme", "globex")
KINDS = [f"k{i}" for i in range(12)]
YEARS = list(range(2000, 2020))
WORDS = (
    "cat dog owl mouse hunt night river fish swim ocean bee honey flower wolf bark song whale air insect wax "
    "pollen forest tree leaf root stone water fire cloud rain storm wind snow ice sun moon hill valley lake "
    "field grass seed bird nest egg shell sand wave tide reef coral crab shark seal ice bear fox deer elk"
).split()


def rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def document(i: int, tenant: str) -> Any:
    from rag.types import Document

    words = [WORDS[(i * 7 + j * 13 + len(tenant)) % len(WORDS)] for j in range(60)]
    metadata = {"kind": KINDS[i % len(KINDS)], "year": YEARS[i % len(YEARS)]}
    return Document(f"{tenant}-{i}", " ".join(words), f"{tenant} document {i}", metadata, tenant)


def query(i: int) -> tuple[str, dict[str, Any] | None]:
    """The i-th distinct query and its filters: half none, a third one field, the rest two fields."""
    text = " ".join(WORDS[(i * 31 + j * 17) % len(WORDS)] for j in range(5)) + f" item {i}"
    slot = i % 6
    if slot < 3:
        return text, None
    if slot < 5:
        return text, {"kind": KINDS[(i // 6) % len(KINDS)]}
    return text, {"kind": KINDS[(i // 6) % len(KINDS)], "year": YEARS[(i // 7) % len(YEARS)]}


def object_ratio(answer: dict[str, Any]) -> float:
    """Bytes of a parsed answer's Python objects per byte of its JSON (L1 accounts JSON bytes)."""
    payload = json.dumps(answer, separators=(",", ":"))
    gc.collect()
    tracemalloc.start()
    parsed = json.loads(payload)
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del parsed
    return size / len(payload)


async def run(mode: str, queries: int, docs: int, redis_url: str | None) -> dict[str, Any]:
    from rag.config import load_settings
    from rag.service.answer import QueryRequest
    from rag.service.service import RetrievalService

    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            data_dir=Path(folder),
            embedder_model="hash:384",
            collection="soak",
            api_keys=",".join(f"{t}:{t}-key-0123456789abcdef" for t in TENANTS),
            admin_token="a" * 24,
            rate_limit_qps=0,  # the soak measures memory, not the limiter
            deadline_ms=60_000,
            redis_url=redis_url,
            redis_timeout_ms=2000,
            cache_secret="soak-cache-secret-0123456789abcdef" if redis_url else None,
            log_level="WARNING",
        )
        service = RetrievalService(settings)
        await service.start()
        await service.lifecycle.wait_loaded()
        for tenant in TENANTS:
            _, done = service.ingestion.submit(tenant, [document(i, tenant) for i in range(docs)], [])
            await asyncio.wrap_future(done)
        assert service.lifecycle.cache is not None
        gc.collect()
        rss0 = rss_bytes()
        samples: list[dict[str, Any]] = []
        outcomes: dict[str, int] = {}
        last_full = None
        started = time.perf_counter()
        for i in range(queries):
            if i == queries // 2:  # a new index version mid-run
                for tenant in TENANTS:
                    extra = document(docs + i, tenant)
                    _, done = service.ingestion.submit(tenant, [extra], [])
                    await asyncio.wrap_future(done)
            text, filters = query(i)
            request = QueryRequest(TENANTS[i % 2], text, top_k=100, filters=filters)
            answer = await service.queries.query(request)
            outcomes[answer.cache] = outcomes.get(answer.cache, 0) + 1
            if filters is None and len(answer.results) == 100:
                last_full = answer
            if (i + 1) % 1000 == 0:
                stats = service.lifecycle.cache.stats()
                redis_used = await redis_memory(service) if redis_url else None
                samples.append(
                    {
                        "queries": i + 1,
                        "rss_mib": round(rss_bytes() / MIB, 1),
                        "l1_entries": stats.l1_entries,
                        "l1_mib": round(stats.l1_bytes / MIB, 2),
                        "l2_entries": stats.l2_entries,
                        "l2_mib": round(stats.l2_bytes / MIB, 2),
                        "spaces": stats.spaces,
                        "redis_used_mib": redis_used,
                        "elapsed_s": round(time.perf_counter() - started, 1),
                    }
                )
                print(mode, samples[-1], file=sys.stderr, flush=True)
        stats = service.lifecycle.cache.stats()
        assert last_full is not None, "no unfiltered query returned 100 results"
        full = {"results": [asdict(r) for r in last_full.results], "route": last_full.route, "plan": {}}
        ratio = object_ratio({**full, "index_version": last_full.index_version})
        full_kib = len(json.dumps(full, separators=(",", ":"))) / 1024
        await service.stop()
    return {
        "mode": mode,
        "queries": queries,
        "docs_per_tenant": docs,
        "rss0_mib": round(rss0 / MIB, 1),
        "object_ratio": round(ratio, 2),
        "top100_answer_kib": round(full_kib, 1),
        "mean_cached_answer_kib": round(stats.l1_bytes / max(stats.l1_entries, 1) / 1024, 1),
        "outcomes": outcomes,
        "caps": {
            "l1_max_bytes": settings.cache_l1_max_bytes,
            "l2_max_bytes": settings.cache_l2_max_bytes,
            "l1_entries": settings.cache_l1_entries,
            "l2_max_entries": settings.cache_l2_max_entries,
            "max_spaces": settings.cache_max_spaces,
        },
        "samples": samples,
    }


async def redis_memory(service: Any) -> float | None:
    try:
        info = await service.lifecycle.redis.run(lambda r: r.info("memory"))
        return round(float(info["used_memory"]) / MIB, 1)
    except Exception:
        return None


def child(args: argparse.Namespace) -> None:
    """One mode in this (fresh) process: the result as JSON on stdout."""
    for key in [k for k in os.environ if k.startswith("RAG_")]:
        del os.environ[key]
    if args.mode == "redis":
        from redis import Redis

        from rag.testing.servers import redis_server

        with tempfile.TemporaryDirectory() as folder, redis_server(Path(folder) / "redis") as server:
            Redis.from_url(server.url).config_set("maxmemory", f"{args.redis_maxmemory_mib}mb")
            Redis.from_url(server.url).config_set("maxmemory-policy", "volatile-lru")
            result = asyncio.run(run("redis", args.queries, args.docs, server.url))
            result["redis_maxmemory_mib"] = args.redis_maxmemory_mib
    else:
        result = asyncio.run(run("local", args.queries, args.docs, None))
    print(json.dumps(result))


def bound_mib(result: dict[str, Any]) -> float:
    caps = result["caps"]
    ratio = max(result["object_ratio"], 1.0)
    return result["rss0_mib"] + (ratio * caps["l1_max_bytes"] + caps["l2_max_bytes"] + ALLOWANCE) / MIB


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    for result, colour in zip(results, ("tab:blue", "tab:orange"), strict=False):
        xs = [s["queries"] for s in result["samples"]]
        ax.plot(xs, [s["rss_mib"] for s in result["samples"]], color=colour, marker=".", label=result["mode"])
        ax.axhline(bound_mib(result), color=colour, linestyle=":", label=f"{result['mode']}: stated bound")
        ax.axhline(result["rss0_mib"], color=colour, linestyle="--", linewidth=0.8)
    ax.axvline(results[0]["queries"] // 2, color="grey", linewidth=0.8, label="new index version")
    ax.set_xlabel("distinct queries (top_k=100, varied filters)")
    ax.set_ylabel("process RSS, MiB")
    ax.set_ylim(bottom=0)
    ax.set_title("Soak: RSS every 1,000 queries (dashed: after loading; dotted: the stated bound)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def verdict(result: dict[str, Any]) -> dict[str, Any]:
    samples = result["samples"]
    rss = [s["rss_mib"] for s in samples]
    half = len(rss) // 2
    late = rss[half:]
    peak, bound = max(rss), bound_mib(result)
    # growth per 1,000 queries over the second half (after warm-up and the version switch)
    slope = (late[-1] - late[0]) / max(len(late) - 1, 1) if len(late) > 1 else 0.0
    return {
        "peak_rss_mib": peak,
        "bound_mib": round(bound, 1),
        "within_bound": peak <= bound,
        "late_slope": slope,
    }


def markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "# Soak: memory under distinct queries",
        "",
        f"{results[0]['queries']:,} distinct queries per mode, `top_k=100`, filters varied (none / one "
        f"field / two fields), two tenants alternating, {results[0]['docs_per_tenant']:,} documents per "
        "tenant, the hash embedder (384-d), in process (`RetrievalService.query`, no HTTP), no rate limit; "
        "a new index version halfway. Each mode in a fresh process. Default cache caps: "
        f"L1 {results[0]['caps']['l1_max_bytes'] // MIB} MiB / {results[0]['caps']['l1_entries']:,} entries, "
        f"L2 {results[0]['caps']['l2_max_bytes'] // MIB} MiB / {results[0]['caps']['l2_max_entries']:,} "
        f"entries (half per tenant), {results[0]['caps']['max_spaces']} namespaces per tenant.",
        "",
        "**Bound** (does not depend on the number of queries): `RSS <= RSS_0 + k * L1_max_bytes + "
        f"L2_max_bytes + {ALLOWANCE // MIB} MiB`, with `RSS_0` the RSS after loading the index and `k` the "
        "measured bytes of a cached answer's Python objects per byte of its JSON (L1 accounts JSON bytes).",
        "",
        "| mode | RSS_0 MiB | k | bound MiB | peak RSS MiB | growth per 1k queries, 2nd half (MiB) | "
        "top_k=100 answer KiB | mean cached answer KiB | cache outcomes |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        v = verdict(r)
        outcomes = ", ".join(f"{k} {n}" for k, n in sorted(r["outcomes"].items()))
        lines.append(
            f"| {r['mode']} | {r['rss0_mib']} | {r['object_ratio']} | {v['bound_mib']} | {v['peak_rss_mib']} "
            f"{'(within)' if v['within_bound'] else '(**over**)'} | {v['late_slope']:+.2f} | "
            f"{r['top100_answer_kib']} | {r['mean_cached_answer_kib']} | {outcomes} |"
        )
    lines += ["", "RSS and cache contents every 1,000 queries:", ""]
    for r in results:
        lines += [
            f"**{r['mode']}**"
            + (f" (Redis maxmemory {r['redis_maxmemory_mib']} MiB)" if r["mode"] == "redis" else ""),
            "",
            "| queries | RSS MiB | L1 entries | L1 MiB | L2 entries | L2 MiB | namespaces | Redis MiB | s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for s in r["samples"]:
            redis_mib = s["redis_used_mib"] if s["redis_used_mib"] is not None else "-"
            lines.append(
                f"| {s['queries']:,} | {s['rss_mib']} | {s['l1_entries']:,} | {s['l1_mib']} "
                f"| {s['l2_entries']:,} | {s['l2_mib']} | {s['spaces']} | {redis_mib} | {s['elapsed_s']} |"
            )
        lines.append("")
    lines += [
        "Plot: `soak.png`. Reproduce: `python benchmarks/soak.py` (the two modes side by side).",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--queries", type=int, default=20_000)
    parser.add_argument("--docs", type=int, default=300, help="documents per tenant")
    parser.add_argument("--modes", default="local,redis")
    parser.add_argument("--redis-maxmemory-mib", type=int, default=256)
    parser.add_argument("--mode", help=argparse.SUPPRESS)  # a child process runs one mode
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args()
    if args.mode:
        child(args)
        return
    procs = []
    for mode in args.modes.split(","):  # each mode in its own fresh process, side by side
        command = [sys.executable, __file__, "--mode", mode, "--queries", str(args.queries)]
        command += ["--docs", str(args.docs), "--redis-maxmemory-mib", str(args.redis_maxmemory_mib)]
        procs.append(subprocess.Popen(command, stdout=subprocess.PIPE, text=True))
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"a soak child failed ({proc.returncode}): {proc.args!r}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    text = markdown(results)
    if args.no_write:
        print(text)
        return
    data = {
        "results": results,
        "verdicts": {r["mode"]: verdict(r) for r in results},
        "allowance_mib": ALLOWANCE // MIB,
    }
    write_results("soak", data, text)
    plot(results, RESULTS / "soak.png")


if __name__ == "__main__":
    main()
