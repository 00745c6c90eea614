"""`rag eval`: run a named pipeline over a BEIR folder and report quality and latency."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from rag.config import Settings
from rag.dense.matryoshka import scoring_work
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import dataset_collection, open_dataset
from rag.offline.metrics import evaluate_queries, ranked_run
from rag.retrieval.plan import PipelineName
from rag.rollout.config import ProfileLimits, RolloutConfig
from rag.routing.analyzer import QueryAnalyzer
from rag.routing.budgets import BudgetState
from rag.routing.router import Routed, RouteInputs, Router, deployment_plan
from rag.runtime import Runtime

log = logging.getLogger(__name__)


def _router(
    settings: Settings, runtime: Runtime, limits: ProfileLimits, reranker_available: bool
) -> Callable[[str], Routed]:
    """The service's analyzer and rules router, with no budget pressure, flags or bandit."""
    analyzer = QueryAnalyzer(runtime.snapshot.analyzer)
    router = Router(settings, reranker_available=reranker_available)
    unlimited = BudgetState.unlimited()

    def route(text: str) -> Routed:
        features = analyzer.analyze(text, runtime.snapshot.idf)
        return router.route(RouteInputs(features, limits, unlimited, top_k=100))

    return route


def evaluate(
    settings: Settings,
    data: Path,
    pipeline: PipelineName,
    *,
    split: str = "test",
    limit: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    for required in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (data / required).is_file():
            raise FileNotFoundError(f"{data} is not a BEIR folder: missing {required}")
    if settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(data, settings)})
    qrels = read_qrels(data / "qrels" / f"{split}.tsv")
    queries = read_queries(data / "queries.jsonl")
    qids = [q for q in qrels if q in queries][: limit or None]
    qrels = {q: qrels[q] for q in qids}

    runtime = open_dataset(
        settings,
        data,
        load_reranker=pipeline in (PipelineName.HYBRID_RERANK, PipelineName.AUTO),
        progress=progress,
    )
    try:
        reranker_available = runtime.reranker is not None
        # the deployment profile's limits as the service has them (the rollout config's overrides too)
        limits = RolloutConfig.load(settings.rollout_config).profile_limits(settings.profile)
        plan = deployment_plan(pipeline, settings, limits, top_k=100, reranker_available=reranker_available)
        auto = pipeline is PipelineName.AUTO
        route = _router(settings, runtime, limits, reranker_available) if auto else None
        runtime.warm_up()  # model loading is not query latency
        runtime.pipeline.search(queries[qids[0]], plan)
        ranked: dict[str, list[str]] = {}
        latencies: list[float] = []
        rerank_pairs = 0
        degraded: dict[str, int] = {}
        arms: dict[str, int] = {}
        for qid in tqdm(qids, desc=f"eval {pipeline.value}", disable=not progress):
            start = time.perf_counter()
            if route is not None:  # the service's router, query by query (its time counts as latency)
                routed = route(queries[qid])
                plan = routed.plan
                arms[routed.arm.value] = arms.get(routed.arm.value, 0) + 1
            outcome = runtime.pipeline.search(queries[qid], plan)
            latencies.append((time.perf_counter() - start) * 1000.0)
            ranked[qid] = [h.doc_id for h in outcome.hits[: plan.top_k]]
            rerank_pairs += outcome.rerank_pairs
            for d in outcome.degraded:
                degraded[f"{d.step}: {d.reason}"] = degraded.get(f"{d.step}: {d.reason}", 0) + 1
        metrics, per_query = evaluate_queries(qrels, ranked_run(ranked))
        n_points = len(runtime.snapshot.point_rows)
        dim = runtime.embedder.dim
        return {
            "dataset": data.resolve().name,
            "pipeline": pipeline.value,
            "split": split,
            "queries": len(qids),
            **metrics,
            "latency_ms": {
                "p50": float(np.percentile(latencies, 50)),
                "p95": float(np.percentile(latencies, 95)),
                "mean": float(np.mean(latencies)),
            },
            "rerank_pairs": rerank_pairs,
            "degraded": degraded,
            **({"arms": arms} if arms else {}),
            "index_version": runtime.snapshot.version,
            "collection": settings.collection,
            "plan": {
                "retrievers": list(plan.retrievers),
                "dims": plan.dims or dim,
                "prefetch": plan.prefetch if plan.dims and plan.rescore else None,
                "rescore": plan.rescore,
                "candidates": plan.candidates,
                "fusion": plan.fusion.value,
                "weights": plan.weights,
                "rrf_k": plan.rrf_k,
                "rerank_depth": plan.rerank_depth,
            },
            "dense_scoring_work": (
                scoring_work(n_points, dim, plan.dims, plan.prefetch, rescore=plan.rescore)
                if "dense" in plan.retrievers
                else 0
            ),
            "embedder": settings.embedder_model,
            "embedder_backend": settings.embedder_backend,
            "reranker": settings.reranker_model if plan.rerank_depth else None,
            "rotation": settings.matryoshka_rotation,
            "per_query": per_query,  # query id -> its metrics: what `rag eval --compare` pairs
        }
    finally:
        runtime.close()
