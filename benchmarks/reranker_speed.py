"""Cross-encoder speed on 2 CPU cores: torch vs onnxruntime fp32 vs onnxruntime int8 (dynamic quantisation).

    python benchmarks/reranker_speed.py --data ../shared/data/scifact --model DIR [--queries 100]

For each test query the hybrid top ``--depth`` passages are scored by every backend. Reports milliseconds
per query and pairs/s, agreement with torch (Spearman rank correlation, top-10 overlap) and nDCG@10 of the
reranked lists on those queries.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from benchmarks._common import write_results
from rag.config import load_settings
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import dataset_collection
from rag.offline.metrics import evaluate_run, ranked_run
from rag.rerank.cross_encoder import rerank
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime, build_reranker


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--depth", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=256)
    args = parser.parse_args()

    base = load_settings()
    settings = base.model_copy(update={"collection": dataset_collection(args.data, base)})
    qrels = read_qrels(args.data / "qrels" / "test.tsv")
    queries = read_queries(args.data / "queries.jsonl")
    qids = [q for q in qrels if q in queries][: args.queries]
    runtime = Runtime.open(settings, load_reranker=False)
    plan = plan_for(PipelineName.HYBRID, settings, top_k=100, reranker_available=False)
    candidates = {q: runtime.pipeline.search(queries[q], plan).hits for q in qids}
    runtime.close()

    rows, torch_scores = [], {}
    for backend in ("torch", "onnx", "onnx-int8"):
        reranker = build_reranker(
            settings.model_copy(
                update={
                    "reranker_model": args.model,
                    "reranker_backend": backend,
                    "reranker_max_length": args.max_length,
                }
            )
        )
        assert reranker is not None
        passages = {q: [runtime.pipeline.passage(h) for h in candidates[q][: args.depth]] for q in qids}
        reranker.score(queries[qids[0]], passages[qids[0]])  # warm-up (and ONNX export on first use)
        times, scores = [], {}
        for q in qids:
            t0 = time.perf_counter()
            scores[q] = reranker.score(queries[q], passages[q])
            times.append(time.perf_counter() - t0)
        if backend == "torch":
            torch_scores = scores
        ranked = {
            q: [
                h.doc_id
                for h in rerank(
                    candidates[q],
                    scores[q],
                    depth=len(scores[q]),
                    first_stage_weight=reranker.first_stage_weight,
                )
            ]
            for q in qids
        }
        overlap = np.mean(
            [
                len(set(np.argsort(-scores[q])[:10]) & set(np.argsort(-torch_scores[q])[:10])) / 10
                for q in qids
            ]
        )
        rows.append(
            {
                "backend": backend,
                "ms_per_query": 1000 * float(np.median(times)),
                "pairs_per_s": args.depth / float(np.median(times)),
                "spearman_vs_torch": float(np.mean([spearman(scores[q], torch_scores[q]) for q in qids])),
                "top10_overlap_vs_torch": float(overlap),
                "ndcg@10": evaluate_run({q: qrels[q] for q in qids}, ranked_run(ranked))["ndcg@10"],
            }
        )
        print(rows[-1])
    torch_ms = rows[0]["ms_per_query"]
    lines = [
        f"# Cross-encoder backends ({args.queries} {args.data.name} test queries × {args.depth} pairs, "
        f"max_length {args.max_length}, 2 CPU cores)",
        "",
        "Command: `python benchmarks/reranker_speed.py --data ../shared/data/scifact "
        f"--model <trained folder> --queries {args.queries}`",
        "",
        "| backend | ms / query (median) | pairs / s | speed-up | Spearman vs torch | top-10 overlap "
        "| nDCG@10 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['ms_per_query']:.0f} | {r['pairs_per_s']:.0f} | "
            f"{torch_ms / r['ms_per_query']:.2f}× | {r['spearman_vs_torch']:.3f} | "
            f"{r['top10_overlap_vs_torch']:.2f} | {r['ndcg@10']:.4f} |"
        )
    write_results(
        "reranker_speed", {"rows": rows, "queries": len(qids), "depth": args.depth}, "\n".join(lines) + "\n"
    )


if __name__ == "__main__":
    main()
