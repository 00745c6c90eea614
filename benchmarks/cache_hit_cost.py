"""In-process cost of the request path through ``RetrievalService.query`` (no HTTP, no load generator):

- an **L1 cache hit**: everything a repeated query pays before and around the cache lookup;
- an **uncached query**: distinct queries with the cache off, over a 2,000-document index of two tenants,
  without and with a metadata filter — the non-model part of a miss (routing, BM25, the embedded vector
  store, fusion, the filter mask, results), since the hash embedder costs next to nothing.

Auth and HTTP are not included. Both are reported as wall µs and as process CPU µs (CPU time is the
steadier of the two on a shared 2-core machine). The deterministic hash embedder, in a temp folder.
To compare two commits on the same machine, run this file against each commit's code:

    python -m benchmarks.cache_hit_cost
    git worktree add /tmp/old <commit> && PYTHONPATH=/tmp/old python benchmarks/cache_hit_cost.py --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import load_settings
from rag.service.answer import QueryRequest
from rag.service.service import RetrievalService
from rag.types import Document

WORDS = (
    "cat dog owl mouse hunt night river fish swim ocean bee honey flower wolf bark song whale air "
    "insect wax pollen forest tree leaf root stone water fire cloud rain storm wind snow ice sun moon"
).split()


@dataclass(frozen=True, slots=True)
class Timing:
    wall_us: float
    cpu_us: float


def _doc(i: int, tenant: str) -> Document:
    words = [WORDS[(i * 7 + j * 13) % len(WORDS)] for j in range(40)]
    metadata = {"lang": "en" if i % 3 else "de", "year": 2000 + i % 20}
    return Document(f"d{i}", " ".join(words), f"doc {i}", metadata, tenant)


async def _service(folder: str, *, cache: bool) -> RetrievalService:
    settings = load_settings(
        data_dir=Path(folder),
        embedder_model="hash:64",
        collection="hits",
        api_keys="acme:" + "k" * 24 + ",globex:" + "g" * 24,
        admin_token="a" * 20,
        rate_limit_qps=0,
        cache_enabled=cache,
        deadline_ms=60_000,
    )
    service = RetrievalService(settings)
    await service.start()
    await service.lifecycle.wait_loaded()
    return service


async def _ingest(service: RetrievalService, tenant: str, docs: list[Document]) -> None:
    _, done = await service.ingestion.submit(tenant, docs, [])
    await asyncio.wrap_future(done)


async def l1_hits(repeats: int, rounds: int) -> list[Timing]:
    with tempfile.TemporaryDirectory() as folder:
        service = await _service(folder, cache=True)
        docs = [Document(f"d{i}", f"cats and dogs number {i} hunt mice", "t", {}, "acme") for i in range(50)]
        await _ingest(service, "acme", docs)
        request = QueryRequest("acme", "which animal hunts mice")
        await service.queries.query(request)  # the miss that fills the cache
        per_round = []
        for _ in range(rounds):
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(repeats):
                answer = await service.queries.query(request)
            assert answer.cache == "l1"
            per_round.append(
                Timing(
                    (time.perf_counter() - wall) / repeats * 1e6, (time.process_time() - cpu) / repeats * 1e6
                )
            )
        await service.stop()
        return per_round


async def uncached(queries: int, filters: dict[str, Any] | None) -> Timing:
    with tempfile.TemporaryDirectory() as folder:
        service = await _service(folder, cache=False)
        await _ingest(service, "acme", [_doc(i, "acme") for i in range(1000)])
        await _ingest(service, "globex", [_doc(i, "globex") for i in range(1000, 2000)])
        texts = [
            " ".join(WORDS[(q * 5 + j * 3) % len(WORDS)] for j in range(6)) + f" {q}" for q in range(queries)
        ]
        for text in texts[:20]:  # warm-up
            assert (await service.queries.query(QueryRequest("acme", text, filters=filters))).results
        wall, cpu = time.perf_counter(), time.process_time()
        for text in texts:
            await service.queries.query(QueryRequest("acme", text, filters=filters))
        timing = Timing(
            (time.perf_counter() - wall) / queries * 1e6, (time.process_time() - cpu) / queries * 1e6
        )
        await service.stop()
        return timing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--queries", type=int, default=400, help="distinct uncached queries per case")
    parser.add_argument("--no-write", action="store_true", help="print only (e.g. from an old worktree)")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("RAG_")]:
        del os.environ[key]
    rounds = asyncio.run(l1_hits(args.repeats, args.rounds))
    plain = asyncio.run(uncached(args.queries, None))
    filtered = asyncio.run(uncached(args.queries, {"lang": "en", "year": [2001, 2002, 2003]}))
    row = {
        "repeats": args.repeats,
        "rounds": [r.wall_us for r in rounds],
        "rounds_cpu": [r.cpu_us for r in rounds],
        "median_us": statistics.median(r.wall_us for r in rounds),
        "median_cpu_us": statistics.median(r.cpu_us for r in rounds),
        "uncached": {"queries": args.queries, "wall_us": plain.wall_us, "cpu_us": plain.cpu_us},
        "uncached_filtered": {
            "queries": args.queries,
            "wall_us": filtered.wall_us,
            "cpu_us": filtered.cpu_us,
        },
    }
    markdown = (
        "# Cost of the request path in process\n\n"
        f"`RetrievalService.query`, hash embedder. Reproduce: `python -m benchmarks.cache_hit_cost`.\n\n"
        "| case | wall µs / query | CPU µs / query |\n|---|---:|---:|\n"
        f"| L1 hit (median of {args.rounds} rounds of {args.repeats}) | {row['median_us']:.0f} "
        f"| {row['median_cpu_us']:.0f} |\n"
        f"| uncached hybrid, {args.queries} distinct queries, 2 tenants × 1,000 docs | {plain.wall_us:.0f} "
        f"| {plain.cpu_us:.0f} |\n"
        f"| the same with a metadata filter (2 fields) | {filtered.wall_us:.0f} | {filtered.cpu_us:.0f} |\n"
    )
    if args.no_write:
        print(markdown)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_results

    write_results("cache_hit_cost", row, markdown)


if __name__ == "__main__":
    main()
