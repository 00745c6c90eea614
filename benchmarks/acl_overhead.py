"""Query CPU with and without document ACLs (issue 18), in process through ``RetrievalService.query``
(no HTTP), cache off, the hash embedder (so what is measured is the non-model part of a query: routing,
BM25, the embedded vector store, fusion, the masks, results). Cases, each its own service over the same
generated documents (two tenants), measured in interleaved rounds in one run on one machine:

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

from rag.acl import Caller
from rag.config import load_settings
from rag.retrieval.filters import AclIndex, acl_index
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
    )
    service = RetrievalService(settings)
    await service.start()
    await service.lifecycle.wait_loaded()
    for tenant, seed in (("acme", 1), ("globex", 2)):
        _, done = service.ingestion.submit(
            tenant, documents(docs // 2, tenant, acl=case.acl_docs, seed=seed), []
        )
        await asyncio.wrap_future(done)
    case.service = service


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
            for case in cases:  # interleaved: drift on the machine hits every case alike
                assert case.service is not None
                n_results = 0
                wall, cpu = time.perf_counter(), time.process_time()
                for text in texts:
                    answer = await case.service.queries.query(QueryRequest("acme", text, caller=case.caller))
                    n_results += len(answer.results)
                case.cpu_us.append((time.process_time() - cpu) / len(texts) * 1e6)
                case.wall_us.append((time.perf_counter() - wall) / len(texts) * 1e6)
                case.results.append(n_results)
        for case in cases:
            assert case.service is not None
            await case.service.stop()
    base = statistics.median(cases[0].cpu_us)
    return {
        "docs": args.docs,
        "queries_per_round": args.queries,
        "rounds": args.rounds,
        "load_avg_1m": os.getloadavg()[0],
        "acl_index": {"chunks": len(snapshot.chunks), "build_cpu_ms": build_ms, "bytes": index.nbytes},
        "cases": {
            c.name: {
                "cpu_us_median": statistics.median(c.cpu_us),
                "cpu_us_rounds": c.cpu_us,
                "wall_us_median": statistics.median(c.wall_us),
                "overhead_vs_plain_pct": (statistics.median(c.cpu_us) / base - 1) * 100,
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
        "| case | CPU µs / query | vs plain | wall µs / query | results / query |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, c in row["cases"].items():
        lines.append(
            f"| {name} | {c['cpu_us_median']:.0f} | {c['overhead_vs_plain_pct']:+.1f}% | "
            f"{c['wall_us_median']:.0f} | {c['mean_results']:.1f} |"
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
