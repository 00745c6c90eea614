"""Query CPU with and without document ACLs (issue 18), in process through ``RetrievalService.query``
(no HTTP), cache off, the hash embedder (so what is measured is the non-model part of a query: routing,
BM25, the embedded vector store, fusion, the masks, results). Cases, each its own service over the same
generated documents (two tenants), measured in one run on one machine, interleaved query by query (each
query runs on every case in turn, the order rotated) so that drift on a shared machine hits every case alike:

- ``plain``: no document has an ACL, no caller (the default path before ACLs);
- ``plain + principal``: the same documents, a caller named (its scope hides nothing, so it is dropped:
  this must cost what ``plain`` costs);
- ``acl``: every document of the tenant carries an ACL (1-4 entries of 40 users / 12 groups; a fifth have
  none, public), a caller with 2 groups — the row mask and the Qdrant payload condition on ``acl``;
- ``acl, anonymous``: the same documents, no caller (it sees the unlisted fifth);
- ``acl, deny``: the ``acl`` case with the tenant default ``deny``.

Reported per case: the median over rounds of process CPU µs per query (steadier than wall time on a
shared machine), the wall µs, and the results' mean count; plus the one-time ACL index build and its
bytes. Reproduce: ``python -m benchmarks.acl_overhead`` (``--docs``, ``--queries``, ``--rounds``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag.acl import AccessScope, AclDefault, Caller
from rag.config import load_settings
from rag.retrieval.filters import AclIndex, SearchFilter, acl_index, row_mask
from rag.service.answer import QueryRequest
from rag.service.service import RetrievalService
from rag.types import Document

WORDS = (
    "cat dog owl mouse hunt night river fish swim ocean bee honey flower wolf bark song whale air "
    "insect wax pollen forest tree leaf root stone water fire cloud rain storm wind snow ice sun moon"
).split()
USERS = [f"u{i}" for i in range(40)]
GROUPS = [f"g{i}" for i in range(12)]


def documents(n: int, tenant: str, *, acl: bool, seed: int) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for i in range(n):
        text = " ".join(WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(40))
        entries: tuple[str, ...] = ()
        if acl and rng.random() >= 0.2:
            picked = {f"user:{u}" for u in rng.sample(USERS, rng.randint(0, 2))}
            picked |= {f"group:{g}" for g in rng.sample(GROUPS, rng.randint(1, 2))}
            entries = tuple(sorted(picked))
        docs.append(Document(f"d{i}", text, f"doc {i}", {"lang": "en"}, tenant, acl=entries))
    return docs


@dataclass
class Case:
    name: str
    acl_docs: bool
    caller: Caller | None
    default: str = "public"
    service: RetrievalService | None = None
    cpu_us: list[float] = field(default_factory=list)
    wall_us: list[float] = field(default_factory=list)
    results: list[int] = field(default_factory=list)
    per_query_cpu_us: list[float] = field(default_factory=list)


async def start(case: Case, folder: str, docs: int) -> None:
    settings = load_settings(
        data_dir=Path(folder) / case.name.replace(" ", "_").replace(",", "").replace("+", "p"),
        embedder_model="hash:64",
        collection="acl",
        api_keys="acme:" + "k" * 24,
        admin_token="a" * 20,
        rate_limit_qps=0,
        cache_enabled=False,
        deadline_ms=60_000,
        acl_default=case.default,
        version_poll_ms=0,  # five services in one process: no follower polls adding CPU to the queries
    )
    service = RetrievalService(settings)
    await service.start()
    await service.lifecycle.wait_loaded()
    for tenant, seed in (("acme", 1), ("globex", 2)):
        _, done = await service.ingestion.submit(
            tenant, documents(docs // 2, tenant, acl=case.acl_docs, seed=seed), []
        )
        await asyncio.wrap_future(done)
    case.service = service


def components(plain: RetrievalService, listed: RetrievalService, caller: Caller, n: int) -> dict[str, Any]:
    """The ACL's own work, one thread, ``time.thread_time`` (no background loop counted), alternating the
    two variants of each step ``n`` times: the row mask, BM25 over it, the dense search with its payload
    filter (tenant alone vs tenant + ACL condition) and the check of every hit."""
    rows: dict[str, dict[str, float]] = {}
    scope = AccessScope.of(caller, AclDefault.PUBLIC)
    p_pipe, a_pipe = plain.lifecycle.serving().pipeline, listed.lifecycle.serving().pipeline
    p_flt, a_flt = SearchFilter("acme"), SearchFilter("acme", access=scope)
    vector = np.ones(64, dtype=np.float32) / 8.0
    texts = [" ".join(WORDS[(q * 5 + j * 3) % len(WORDS)] for j in range(6)) for q in range(n)]
    steps = {
        "row mask": (lambda i: row_mask(p_pipe.snapshot, p_flt), lambda i: row_mask(a_pipe.snapshot, a_flt)),
        "BM25 (mask computed)": (
            lambda i: p_pipe.bm25.retrieve(texts[i], 100, mask=row_mask(p_pipe.snapshot, p_flt)),
            lambda i: a_pipe.bm25.retrieve(texts[i], 100, mask=row_mask(a_pipe.snapshot, a_flt)),
        ),
        "dense search + hit check": (
            lambda i: p_pipe.dense.retrieve(vector, 100, flt=p_flt, mask=row_mask(p_pipe.snapshot, p_flt)),  # type: ignore[union-attr]
            lambda i: a_pipe.dense.retrieve(vector, 100, flt=a_flt, mask=row_mask(a_pipe.snapshot, a_flt)),  # type: ignore[union-attr]
        ),
    }
    for name, (without, with_acl) in steps.items():
        times: list[list[float]] = [[], []]
        for i in range(n):
            for k, fn in ((0, without), (1, with_acl)) if i % 2 else ((1, with_acl), (0, without)):
                t0 = time.thread_time()
                fn(i)
                times[k].append((time.thread_time() - t0) * 1e6)
        rows[name] = {
            "without_us": statistics.median(times[0]),
            "with_acl_us": statistics.median(times[1]),
        }
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    alice = Caller("u3", frozenset({"g1", "g5"}))
    cases = [
        Case("plain", False, None),
        Case("plain + principal", False, alice),
        Case("acl", True, alice),
        Case("acl, anonymous", True, None),
        Case("acl, deny", True, alice, "deny"),
    ]
    texts = [
        " ".join(WORDS[(q * 5 + j * 3) % len(WORDS)] for j in range(6)) + f" {q}" for q in range(args.queries)
    ]
    with tempfile.TemporaryDirectory() as folder:
        for case in cases:
            await start(case, folder, args.docs)
        acl_service = cases[2].service
        assert acl_service is not None
        snapshot = acl_service.lifecycle.serving().pipeline.snapshot
        index = acl_index(snapshot)  # built on the first query already: rebuilt here to time it
        t0 = time.process_time()
        rebuilt = AclIndex.build(snapshot.chunks)
        build_ms = (time.process_time() - t0) * 1000
        assert rebuilt.nbytes == index.nbytes
        for case in cases:  # warm-up: first queries build indexes and fill lazy state
            assert case.service is not None
            for text in texts[:20]:
                await case.service.queries.query(QueryRequest("acme", text, caller=case.caller))
        for _ in range(args.rounds):
            sums = {case.name: [0.0, 0.0, 0] for case in cases}
            for i, text in enumerate(texts):
                # interleaved per query, the order rotated: drift on a shared machine hits every case alike
                for case in cases[i % len(cases) :] + cases[: i % len(cases)]:
                    assert case.service is not None
                    request = QueryRequest("acme", text, caller=case.caller)
                    wall, cpu = time.perf_counter(), time.process_time()
                    answer = await case.service.queries.query(request)
                    cpu_us = (time.process_time() - cpu) * 1e6
                    sums[case.name][0] += cpu_us
                    sums[case.name][1] += (time.perf_counter() - wall) * 1e6
                    sums[case.name][2] += len(answer.results)
                    case.per_query_cpu_us.append(cpu_us)
            for case in cases:
                cpu_total, wall_total, n_results = sums[case.name]
                case.cpu_us.append(cpu_total / len(texts))
                case.wall_us.append(wall_total / len(texts))
                case.results.append(int(n_results))
        assert cases[0].service is not None
        parts = components(cases[0].service, acl_service, alice, args.component_repeats)
        for case in cases:
            assert case.service is not None
            await case.service.stop()
    base = statistics.median(cases[0].cpu_us)
    base_q = statistics.median(cases[0].per_query_cpu_us)
    return {
        "docs": args.docs,
        "queries_per_round": args.queries,
        "rounds": args.rounds,
        "load_avg_1m": os.getloadavg()[0],
        "acl_index": {"chunks": len(snapshot.chunks), "build_cpu_ms": build_ms, "bytes": index.nbytes},
        "components": parts,
        "cases": {
            c.name: {
                "cpu_us_median": statistics.median(c.cpu_us),
                "cpu_us_rounds": c.cpu_us,
                "cpu_us_per_query_median": statistics.median(c.per_query_cpu_us),
                "wall_us_median": statistics.median(c.wall_us),
                "overhead_vs_plain_pct": (statistics.median(c.cpu_us) / base - 1) * 100,
                "per_query_median_vs_plain_pct": (statistics.median(c.per_query_cpu_us) / base_q - 1) * 100,
                "mean_results": statistics.mean(c.results) / len(texts),
            }
            for c in cases
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--docs", type=int, default=4000, help="documents, half per tenant")
    parser.add_argument("--queries", type=int, default=200, help="distinct queries per round and case")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--component-repeats", type=int, default=400, help="per step and variant")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("RAG_")]:
        del os.environ[key]
    row = asyncio.run(run(args))
    lines = [
        "# Document ACLs: query CPU with and without them\n",
        f"`RetrievalService.query`, cache off, hash embedder, {args.docs:,} documents (2 tenants), "
        f"{args.queries} distinct hybrid queries per round, median of {args.rounds} interleaved rounds; "
        f"load average (1 min) at the end: {row['load_avg_1m']:.2f} on {os.cpu_count()} cores. "
        "Reproduce: `python -m benchmarks.acl_overhead`.\n",
        "| case | CPU µs / query (median of round means) | vs plain | median per-query CPU µs | vs plain "
        "| rounds' means (min–max) | wall µs / query | results / query |",
        "|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for name, c in row["cases"].items():
        lines.append(
            f"| {name} | {c['cpu_us_median']:.0f} | {c['overhead_vs_plain_pct']:+.1f}% | "
            f"{c['cpu_us_per_query_median']:.0f} | {c['per_query_median_vs_plain_pct']:+.1f}% | "
            f"{min(c['cpu_us_rounds']):.0f}–{max(c['cpu_us_rounds']):.0f} | "
            f"{c['wall_us_median']:.0f} | {c['mean_results']:.1f} |"
        )
    lines += [
        "\nThe ACL's own work, one thread (`time.thread_time`, no background loop counted), median of "
        f"{args.component_repeats} alternating runs, plain service vs ACL'd service (tenant `acme`, "
        f"{args.docs // 2:,} documents):\n",
        "| step | without ACL µs | with ACL µs | difference µs |",
        "|---|---:|---:|---:|",
    ]
    for name, c in row["components"].items():
        lines.append(
            f"| {name} | {c['without_us']:.0f} | {c['with_acl_us']:.0f} | "
            f"{c['with_acl_us'] - c['without_us']:+.0f} |"
        )
    ix = row["acl_index"]
    lines.append(
        f"\nThe ACL index of the version ({ix['chunks']:,} chunks): built once per version on first use in "
        f"{ix['build_cpu_ms']:.1f} CPU-ms, {ix['bytes']:,} bytes.\n"
    )
    markdown = "\n".join(lines) + "\n"
    if args.no_write:
        print(markdown)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_results

    write_results("acl_overhead", row, markdown)


if __name__ == "__main__":
    main()
