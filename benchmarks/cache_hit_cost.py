"""In-process cost of an L1 cache hit through ``RetrievalService.query`` (no HTTP, no load generator):
everything a repeated query pays before and around the cache lookup (auth is not included).

A 50-document index with the deterministic hash embedder in a temp folder; one query answered once,
then repeated. To compare two commits on the same machine, run it from a worktree of each:

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
from pathlib import Path

from rag.config import load_settings
from rag.service.service import QueryRequest, RetrievalService
from rag.types import Document


async def measure(repeats: int, rounds: int) -> list[float]:
    with tempfile.TemporaryDirectory() as folder:
        settings = load_settings(
            data_dir=Path(folder),
            embedder_model="hash:64",
            collection="hits",
            api_keys="acme:" + "k" * 24,
            admin_token="a" * 20,
            rate_limit_qps=0,
        )
        service = RetrievalService(settings)
        await service.start()
        await service.wait_loaded()
        docs = [Document(f"d{i}", f"cats and dogs number {i} hunt mice", "t") for i in range(50)]
        _, done = service.submit_ingest("acme", docs, [])
        await asyncio.wrap_future(done)
        request = QueryRequest("acme", "which animal hunts mice")
        await service.query(request)  # the miss that fills the cache
        per_round = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(repeats):
                answer = await service.query(request)
            assert answer.cache == "l1"
            per_round.append((time.perf_counter() - start) / repeats * 1e6)
        await service.stop()
        return per_round


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true", help="print only (e.g. from an old worktree)")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("RAG_")]:
        del os.environ[key]
    rounds = asyncio.run(measure(args.repeats, args.rounds))
    row = {"repeats": args.repeats, "rounds": rounds, "median_us": statistics.median(rounds)}
    markdown = (
        "# Cost of an L1 cache hit in process\n\n"
        f"`RetrievalService.query`, one repeated query, {args.rounds} rounds of {args.repeats}: "
        f"**{row['median_us']:.0f} µs** median per hit (rounds: "
        + ", ".join(f"{r:.0f}" for r in rounds)
        + " µs).\n\nReproduce: `python -m benchmarks.cache_hit_cost`.\n"
    )
    if args.no_write:
        print(markdown)
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import write_results

    write_results("cache_hit_cost", row, markdown)


if __name__ == "__main__":
    main()
