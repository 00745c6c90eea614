"""BM25 speed and parity: the sparse-matrix index vs rank-bm25 on the same corpus and parameters.

    python benchmarks/bm25_speed.py --data ../shared/data/scifact [--scale 1 10]

Both use the project's analyzer and rank-bm25's BM25Okapi IDF (k1=1.5, b=0.75, epsilon=0.25); queries are
pre-analysed so only scoring + top-10 selection is timed. ``--scale N`` repeats the corpus N times (ids made
unique) to show how the gap grows with corpus size.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from rank_bm25 import BM25Okapi

from benchmarks._common import write_results
from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.io.sources import read_beir_jsonl, read_queries
from rag.text.analyzer import Analyzer


def measure(
    corpus_tokens: list[list[str]], query_tokens: list[list[str]], ref_queries: int
) -> dict[str, object]:
    analyzer = Analyzer()
    t0 = time.perf_counter()
    ours = BM25Index(
        TermMatrix.empty().append(corpus_tokens), analyzer, BM25Params(k1=1.5, b=0.75, idf="okapi")
    )
    build_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    reference = BM25Okapi(corpus_tokens, k1=1.5, b=0.75, epsilon=0.25)
    build_ref = time.perf_counter() - t0

    def top10_ours(tokens: list[str]) -> list[int]:
        scores = ours.scores(tokens)
        from rag.bm25.scoring import top_k

        return top_k(scores, 10, candidates=np.flatnonzero(scores)).tolist()

    def top10_ref(tokens: list[str]) -> list[int]:
        scores = reference.get_scores(tokens)
        order = np.lexsort((np.arange(len(scores)), -scores))[:10]
        return [int(i) for i in order if scores[i] > 0]

    for q in query_tokens[:20]:  # warm-up
        top10_ours(q)
    t0 = time.perf_counter()
    ours_top = [top10_ours(q) for q in query_tokens]
    ours_s = time.perf_counter() - t0
    subset = query_tokens[:ref_queries]
    t0 = time.perf_counter()
    ref_top = [top10_ref(q) for q in subset]
    ref_s = time.perf_counter() - t0
    identical = sum(a == b for a, b in zip(ours_top, ref_top, strict=False))
    ours_qps = len(query_tokens) / ours_s
    ref_qps = len(subset) / ref_s
    return {
        "docs": len(corpus_tokens),
        "queries_ours": len(query_tokens),
        "queries_reference": len(subset),
        "ours_qps": ours_qps,
        "reference_qps": ref_qps,
        "speedup": ours_qps / ref_qps,
        "ours_ms_per_query": 1000 / ours_qps,
        "reference_ms_per_query": 1000 / ref_qps,
        "build_s": {"ours": build_ours, "reference": build_ref},
        "identical_top10": identical,
        "compared_top10": len(subset),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--scale", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--reference-queries", type=int, default=300)
    args = parser.parse_args()

    analyzer = Analyzer()
    docs = list(read_beir_jsonl(args.data / "corpus.jsonl"))
    base_tokens = [analyzer.tokens(f"{d.title}\n{d.text}") for d in docs]
    queries = list(read_queries(args.data / "queries.jsonl").values())
    query_tokens = [analyzer.tokens(q) for q in queries]
    rows = []
    for scale in args.scale:
        row = measure(base_tokens * scale, query_tokens, args.reference_queries)
        row["scale"] = scale
        rows.append(row)
        print(json.dumps(row))
    lines = [
        f"# BM25: sparse-matrix index vs rank-bm25 ({args.data.name}, BM25Okapi IDF, k1=1.5, b=0.75)",
        "",
        "Command: `python benchmarks/bm25_speed.py --data ../shared/data/scifact`. Queries pre-analysed; "
        "timing covers scoring + top-10. One process, 2 cores.",
        "",
        "| docs | ours q/s | rank-bm25 q/s | speed-up | ours ms/q | rank-bm25 ms/q | identical top-10 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['docs']:,} | {r['ours_qps']:,.0f} | {r['reference_qps']:,.1f} | "
            f"**{r['speedup']:,.0f}×** | "
            f"{r['ours_ms_per_query']:.3f} | {r['reference_ms_per_query']:.1f} | "
            f"{r['identical_top10']}/{r['compared_top10']} |"
        )
    write_results("bm25_speed", {"dataset": args.data.name, "rows": rows}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
