"""IR metrics through pytrec_eval (the trec_eval C implementation), BEIR conventions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytrec_eval

Run = dict[str, dict[str, float]]
Qrels = Mapping[str, Mapping[str, int]]


def ranked_run(ranked: Mapping[str, Sequence[str]], *, ignore_identical_ids: bool = True) -> Run:
    """A trec run from ranked doc-id lists. Scores encode rank (n, n-1, …) because trec_eval orders by
    score, and pipeline scores (reranker logits vs. fusion scores) are not comparable across a list."""
    run: Run = {}
    for qid, docs in ranked.items():
        kept = [d for d in docs if not (ignore_identical_ids and d == qid)]
        run[qid] = {d: float(len(kept) - i) for i, d in enumerate(kept)}
    return run


def evaluate_run(
    qrels: Qrels, run: Run, *, k_ndcg: int = 10, k_recall: int = 100, k_mrr: int = 10
) -> dict[str, float]:
    """Mean nDCG@k, Recall@k and MRR@k over every query in ``qrels`` (a query with no results scores 0)."""
    return evaluate_queries(qrels, run, k_ndcg=k_ndcg, k_recall=k_recall, k_mrr=k_mrr)[0]


def evaluate_queries(
    qrels: Qrels, run: Run, *, k_ndcg: int = 10, k_recall: int = 100, k_mrr: int = 10
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """:func:`evaluate_run`'s means, and each query's three metrics (0 for a query with no results) — what
    a paired comparison of two runs needs. The means are computed as before the per-query map existed
    (same values, same summation order), so adding it changed no reported number."""
    qrels_d = {q: dict(docs) for q, docs in qrels.items()}
    run_full = {q: run.get(q, {}) for q in qrels_d}
    main = pytrec_eval.RelevanceEvaluator(qrels_d, {f"ndcg_cut.{k_ndcg}", f"recall.{k_recall}"})
    per_query = main.evaluate({q: docs for q, docs in run_full.items() if docs})
    truncated = {
        q: dict(sorted(docs.items(), key=lambda kv: -kv[1])[:k_mrr]) for q, docs in run_full.items() if docs
    }
    rr = pytrec_eval.RelevanceEvaluator(qrels_d, {"recip_rank"}).evaluate(truncated)
    n = len(qrels_d)

    def mean(values: list[float]) -> float:
        return float(np.sum(values) / n) if n else 0.0

    means = {
        f"ndcg@{k_ndcg}": mean([m[f"ndcg_cut_{k_ndcg}"] for m in per_query.values()]),
        f"recall@{k_recall}": mean([m[f"recall_{k_recall}"] for m in per_query.values()]),
        f"mrr@{k_mrr}": mean([m["recip_rank"] for m in rr.values()]),
    }
    queries = {
        q: {
            f"ndcg@{k_ndcg}": float(per_query.get(q, {}).get(f"ndcg_cut_{k_ndcg}", 0.0)),
            f"recall@{k_recall}": float(per_query.get(q, {}).get(f"recall_{k_recall}", 0.0)),
            f"mrr@{k_mrr}": float(rr.get(q, {}).get("recip_rank", 0.0)),
        }
        for q in qrels_d
    }
    return means, queries
