"""Per-query traces for router design and the bandit simulation: features, each retriever's ranking,
the fused ranking and the cross-encoder scores of its head, with the time each step took.

One expensive pass (the cross-encoder over the fused top ``--depth``) from which every fixed plan's and
every rerank depth's ranking can be recomputed offline (the scores of a pair do not depend on the rest).

    RAG_DATA_DIR=/work/ragdata python -m benchmarks.router_dump --data ../shared/data/scifact \
        --reranker /work/models/reranker-scifact --split test --out /work/ragbench/router_trace_test.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from tqdm import tqdm

from rag.config import load_settings
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import dataset_collection, open_dataset
from rag.retrieval.list_fusion import fuse_lists
from rag.retrieval.plan import PipelineName, plan_for
from rag.routing.analyzer import QueryAnalyzer
from rag.types import ListKey, Retriever


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reranker", required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--qids", type=Path, help="only these query ids (one per line)")
    parser.add_argument("--depth", type=int, default=40)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    settings = load_settings(reranker_model=args.reranker)
    settings = settings.model_copy(update={"collection": dataset_collection(args.data, settings)})
    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    queries = read_queries(args.data / "queries.jsonl")
    qids = [q for q in qrels if q in queries]
    if args.qids is not None:
        wanted = set(args.qids.read_text().split())
        qids = [q for q in qids if q in wanted]
    qids = qids[: args.limit or None]
    runtime = open_dataset(settings, args.data, load_reranker=True, progress=False)
    runtime.warm_up()
    pipeline, snapshot, reranker = runtime.pipeline, runtime.snapshot, runtime.reranker
    assert pipeline.dense is not None and reranker is not None
    plan = plan_for(PipelineName.HYBRID, settings, top_k=100, reranker_available=True)
    analyzer = QueryAnalyzer(snapshot.analyzer)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {json.loads(line)["qid"] for line in args.out.read_text().splitlines() if line}
    with args.out.open("a") as fh:
        for qid in tqdm(qids, desc=f"trace {args.split}"):
            if qid in done:
                continue
            text = queries[qid]
            t = time.perf_counter()
            features = analyzer.analyze(text, snapshot.idf)
            analyze_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            bm25 = pipeline.bm25.retrieve(text, plan.candidates)
            bm25_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            vector = runtime.embedder.embed([text])[0]
            embed_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            dense = pipeline.dense.retrieve(vector, plan.candidates)
            dense_ms = (time.perf_counter() - t) * 1000
            fused = fuse_lists({ListKey(Retriever.BM25): bm25, ListKey(Retriever.DENSE): dense}, plan)
            head = fused[: args.depth]
            t = time.perf_counter()
            scores = reranker.score_pairs([(text, pipeline.passage(h)) for h in head])
            rerank_ms = (time.perf_counter() - t) * 1000
            record = {
                "qid": qid,
                "query": text,
                "features": features.as_dict(),
                "vector": features.vector(),
                "bm25": [[h.doc_id, round(h.score, 4)] for h in bm25],
                "dense": [[h.doc_id, round(h.score, 5)] for h in dense],
                "fused": [h.doc_id for h in fused],
                "ce": [round(float(s), 5) for s in scores],
                "ms": {
                    "analyze": analyze_ms,
                    "bm25": bm25_ms,
                    "embed": embed_ms,
                    "dense": dense_ms,
                    "rerank": rerank_ms,
                },
            }
            fh.write(json.dumps(record) + "\n")
            fh.flush()
    runtime.close()


if __name__ == "__main__":
    main()
