"""Grouped and diverse results on a BEIR folder's test split: nDCG@10 and what the top 10 holds.

    RAG_DATA_DIR=... python benchmarks/grouping.py --data ../shared/data/scifact

Runs the served hybrid plan (as ``rag eval``) over the test queries through the real pipeline, then
shapes each query's ranking as the service does (:mod:`rag.retrieval.shaping`):

* ``group_by: "doc"`` — checks the ids and order equal the default's (results are one per document
  already) and reports how many of the top 10 documents have more than one chunk;
* MMR ``diversity`` at several weights — nDCG@10, distinct documents in the top 10 (10 by construction:
  results are documents), the redundancy of the top 10 (mean and max pairwise TF-IDF cosine of the
  results' best chunks, the similarity MMR uses), how many top-10 documents changed vs diversity 0, and
  the process CPU time of the re-ordering per query.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import write_results
from rag.config import load_settings
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import dataset_collection, open_dataset
from rag.offline.metrics import evaluate_queries, ranked_run
from rag.retrieval.plan import PipelineName
from rag.retrieval.shaping import GroupBy, diversify, similarities
from rag.rollout.config import RolloutConfig
from rag.routing.router import deployment_plan

DIVERSITY = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7)
TOP = 10


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--split", default="test")
    args = parser.parse_args()
    settings = load_settings()
    if settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(args.data, settings)})
    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    texts = read_queries(args.data / "queries.jsonl")
    qids = [q for q in qrels if q in texts]
    runtime = open_dataset(settings, args.data, load_reranker=False, progress=False)
    try:
        limits = RolloutConfig.load(settings.rollout_config).profile_limits(settings.profile)
        plan = deployment_plan(
            PipelineName.HYBRID,
            settings,
            limits,
            top_k=100,
            reranker_available=False,
            fusion=runtime.snapshot.tuned_fusion,
        )
        runtime.warm_up()
        pipeline, snapshot = runtime.pipeline, runtime.snapshot
        outs = [pipeline.search(texts[q], plan) for q in qids]

        grouped = [pipeline.results(o.hits, TOP, group_by=GroupBy.DOC) for o in outs]
        plain = [pipeline.results(o.hits, TOP) for o in outs]
        same = all(
            [(r.doc_id, r.chunk_id, r.score) for r in g] == [(r.doc_id, r.chunk_id, r.score) for r in p]
            for g, p in zip(grouped, plain, strict=True)
        )
        counts = [r.chunks or 0 for g in grouped for r in g]
        group = {
            "ids_order_scores_unchanged": same,
            "results": len(counts),
            "multi_chunk_results": int(sum(c > 1 for c in counts)),
            "mean_chunks": float(np.mean(counts)),
            "max_chunks": int(max(counts)),
            "index_chunks_per_doc": float(len(snapshot.chunks) / snapshot.n_docs),
        }

        base_top: list[list[str]] = []
        rows = []
        for lam in DIVERSITY:
            start = time.process_time()
            shaped = [diversify(snapshot, o.hits, lam, TOP, plan.candidates) for o in outs]
            cpu_us = (time.process_time() - start) * 1e6 / len(outs)
            tops = [[h.doc_id for h in hits[:TOP]] for hits in shaped]
            if lam == 0.0:
                base_top = tops
            metrics, _ = evaluate_queries(qrels, ranked_run(dict(zip(qids, tops, strict=True))))
            sims = [similarities(snapshot, hits[:TOP]) for hits in shaped]
            off = [s[~np.eye(len(s), dtype=bool)] for s in sims if len(s) > 1]
            rows.append(
                {
                    "diversity": lam,
                    "ndcg@10": metrics["ndcg@10"],
                    "distinct_docs_top10": float(np.mean([len(set(t)) for t in tops])),
                    "mean_pairwise_sim": float(np.mean([o.mean() for o in off])),
                    "max_pairwise_sim": float(np.mean([o.max() for o in off])),
                    "changed_docs_vs_0": float(
                        np.mean([len(set(t) - set(b)) for t, b in zip(tops, base_top, strict=True)])
                    ),
                    "mmr_cpu_us_per_query": cpu_us,
                }
            )
    finally:
        runtime.close()
    data = {
        "dataset": args.data.resolve().name,
        "split": args.split,
        "queries": len(qids),
        "plan": {"route": plan.route, "candidates": plan.candidates, "fusion": plan.fusion.value},
        "group_by_doc": group,
        "diversity": rows,
    }
    data["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # timings are process CPU
    write_results("grouping", data, markdown(data))


def markdown(d: dict[str, Any]) -> str:
    g = d["group_by_doc"]
    lines = [
        f"# Grouped and diverse results on {d['dataset']} ({d['split']}, {d['queries']} queries, served "
        f"{d['plan']['route']})",
        "",
        "`python benchmarks/grouping.py --data DIR`. Results are one per document already (each retriever "
        "max-pools its chunks), so the top 10 holds 10 distinct documents at every setting.",
        "",
        '## group_by: "doc"',
        "",
        f"ids, order and scores unchanged: **{g['ids_order_scores_unchanged']}**; of {g['results']} top-10 "
        f"results, {g['multi_chunk_results']} are documents of more than one chunk "
        f"(mean {g['mean_chunks']:.2f}, max {g['max_chunks']}; the index: "
        f"{g['index_chunks_per_doc']:.2f} chunks per document).",
        "",
        "## MMR diversity",
        "",
        "| diversity | nDCG@10 | distinct docs in top 10 | mean pairwise sim | max pairwise sim "
        "| top-10 docs changed vs 0 | MMR CPU µs/query |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in d["diversity"]:
        lines.append(
            f"| {r['diversity']:g} | {r['ndcg@10']:.4f} | {r['distinct_docs_top10']:.1f} | "
            f"{r['mean_pairwise_sim']:.4f} | {r['max_pairwise_sim']:.4f} | {r['changed_docs_vs_0']:.2f} | "
            f"{r['mmr_cpu_us_per_query']:.0f} |"
        )
    lines += ["", f"Machine load average (1/5/15 min) at the end: {d.get('load_average_at_end')}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
