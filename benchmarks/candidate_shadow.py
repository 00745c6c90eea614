"""A new embedder through the candidate path on SciFact: staged, shadowed with judged feedback, promoted.

    RAG_DATA_DIR=/work/bench/eval/data-cand HF_HUB_OFFLINE=1 \\
      python -m benchmarks.candidate_shadow --data ../shared/data/scifact --model /work/bench/models/emb-quiet

1. **The collection.** SciFact's corpus as tenant ``scifact``'s documents in the collection ``fb-scifact``
   (``benchmarks.feedback_training.ingest_for_tenant``: the base model's vectors reused when ``rag eval``
   cached them in the data dir).
2. **Stage** (``rag reembed --model M --stage``: :func:`rag.candidates.stage`): the rows re-embedded by
   ``M`` into ``fb-scifact__candidate``; wall and process CPU time.
3. **Shadow, judged.** The service in process (FastAPI app over httpx's ASGI transport, lifespan and
   follower running) with ``[shadow] rate = 1.0, candidate = "candidate_index"``. For each query of the
   split: ``POST /query`` (top 10), wait for its shadow run on the candidate, then ``POST /feedback``
   with the qrels' grades of the query's judged documents (``relevance``). The service scores both rankings
   (``rag_shadow_judged_*``): per query, the served and the candidate's nDCG@10; paired bootstrap CI.
4. **Promote** (``rag reembed --promote``: :func:`rag.candidates.promote`) while the service runs: it
   follows the new version; the queries again, scored client side. Shadow promised, promotion delivered:
   how many queries score exactly what the candidate scored in shadow.

SciFact (CC BY-NC) and the model stay outside the repository; the report has numbers only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from prometheus_client import REGISTRY

from benchmarks._common import write_results
from benchmarks.feedback_training import COLLECTION, KEY, TENANT, ingest_for_tenant
from rag import candidates
from rag.bandit.reward import ndcg_at_k
from rag.config import Settings, load_settings
from rag.io.sources import read_qrels, read_queries
from rag.offline.compare import bootstrap_ci

FLAG = candidates.CANDIDATE_FLAG
ROLLOUT = f"""
[shadow]
rate = 1.0
candidate = "{FLAG}"
"""


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def shadow_runs() -> float:
    return sum(
        metric("rag_shadow_runs_total", flag=FLAG, status=s)
        for s in ("ok", "error", "skipped_busy", "no_candidate", "same_plan")
    )


def judged_quality() -> tuple[float, float]:
    return (
        metric("rag_shadow_judged_quality_total", flag=FLAG, side="served"),
        metric("rag_shadow_judged_quality_total", flag=FLAG, side="candidate"),
    )


def paired(b: list[float], a: list[float]) -> dict[str, float]:
    """Mean of b - a per query with its paired bootstrap 95% interval."""
    diffs = np.asarray(b) - np.asarray(a)
    lo, hi = bootstrap_ci(diffs)
    return {"mean": float(diffs.mean()), "lo": lo, "hi": hi}


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def until(condition: Callable[[], bool], what: str, timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.02)


@asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[Any, httpx.AsyncClient]]:
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.service.lifecycle.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        headers = {"Authorization": f"Bearer {KEY}"}
        async with httpx.AsyncClient(
            transport=transport, base_url="http://rag.test", headers=headers, timeout=120
        ) as client:
            yield app, client


async def ask(client: httpx.AsyncClient, text: str) -> dict[str, Any]:
    r = await client.post("/query", json={"query": text, "top_k": 10})
    r.raise_for_status()
    body: dict[str, Any] = r.json()
    return body


async def run(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    queries = read_queries(args.data / "queries.jsonl")
    qids = [q for q in qrels if q in queries][: args.limit or None]
    report: dict[str, Any] = {}
    async with served(settings) as (app, client):
        lifecycle = app.state.service.lifecycle
        t0, c0 = time.perf_counter(), cpu_s()
        staged = await asyncio.to_thread(candidates.stage, settings, args.model, progress=False)
        report["stage"] = {
            **staged.as_dict(),
            "wall_s": round(time.perf_counter() - t0, 1),
            "process_cpu_s": round(cpu_s() - c0, 1),
        }
        await until(lambda: lifecycle.candidate is not None, "the service opened the candidate")
        served_version = lifecycle.runtime.snapshot.version
        shadow_served, shadow_candidate, client_served = [], [], []
        t0 = time.perf_counter()
        for qid in qids:
            runs = shadow_runs()
            body = await ask(client, queries[qid])
            assert body["index_version"] == served_version, body["index_version"]
            await until(lambda runs=runs: shadow_runs() > runs, f"the shadow run of {qid}")  # type: ignore[misc]
            before = judged_quality()
            grades = {d: float(g) for d, g in qrels[qid].items()}
            f = await client.post("/feedback", json={"request_id": body["request_id"], "relevance": grades})
            f.raise_for_status()
            after = judged_quality()
            shadow_served.append(after[0] - before[0])
            shadow_candidate.append(after[1] - before[1])
            client_served.append(ndcg_at_k([r["doc_id"] for r in body["results"]], grades, k=10))
        report["shadow"] = {
            "queries": len(qids),
            "seconds": round(time.perf_counter() - t0, 1),
            "shadow_runs_ok": metric("rag_shadow_runs_total", flag=FLAG, status="ok"),
            "served_ndcg@10": float(np.mean(shadow_served)),
            "candidate_ndcg@10": float(np.mean(shadow_candidate)),
            "served_matches_client_side": int(np.sum(np.isclose(shadow_served, client_served, atol=1e-9))),
            "delta": paired(shadow_candidate, shadow_served),
            "outcomes": {
                o: metric("rag_shadow_judged_total", flag=FLAG, outcome=o)
                for o in ("candidate", "served", "tie")
            },
        }
        t0, c0 = time.perf_counter(), cpu_s()
        promoted = await asyncio.to_thread(candidates.promote, settings, progress=False)
        report["promote"] = {
            **promoted.as_dict(),
            "wall_s": round(time.perf_counter() - t0, 1),
            "process_cpu_s": round(cpu_s() - c0, 1),
        }
        await until(
            lambda: lifecycle.runtime.snapshot.version == promoted.version and lifecycle.candidate is None,
            "the service follows the promotion",
        )
        after_promotion = []
        for qid in qids:
            body = await ask(client, queries[qid])
            grades = {d: float(g) for d, g in qrels[qid].items()}
            after_promotion.append(ndcg_at_k([r["doc_id"] for r in body["results"]], grades, k=10))
        report["promoted"] = {
            "index_version": promoted.version,
            "embedder": lifecycle.runtime.embedder.name,
            "ndcg@10": float(np.mean(after_promotion)),
            "same_as_shadow": int(np.sum(np.isclose(after_promotion, shadow_candidate, atol=1e-9))),
        }
    return report


def markdown(report: dict[str, Any], command: str) -> str:
    s, st, p, pr = report["shadow"], report["stage"], report["promote"], report["promoted"]
    delta = s["delta"]
    lines = [
        "# A new embedder through the candidate path (SciFact, served through the HTTP API)",
        "",
        f"`{command}`",
        "",
        "| step | result |",
        "|---|---|",
        f"| stage (`rag reembed --stage`) | {st['chunks']} chunks, {st['embedded']} embedded by "
        f"`{Path(st['embedder']).name}`, {st['wall_s']} s wall, {st['process_cpu_s']} CPU-s (process) |",
        f"| shadow, judged ({s['queries']} queries, {s['shadow_runs_ok']:.0f} shadow runs ok) | served "
        f"nDCG@10 **{s['served_ndcg@10']:.4f}**, candidate **{s['candidate_ndcg@10']:.4f}**; Δ "
        f"{delta['mean']:+.4f} [{delta['lo']:+.4f}, {delta['hi']:+.4f}] (paired bootstrap 95%); "
        f"outcomes {s['outcomes']} |",
        f"| served score as the client computes it | equal on {s['served_matches_client_side']} of "
        f"{s['queries']} queries |",
        f"| promote (`rag reembed --promote`) | {p['version']}: {p['reused']} chunks reused from the "
        f"candidate, {p['embedded']} embedded, {p['wall_s']} s wall |",
        f"| served after promotion | nDCG@10 **{pr['ndcg@10']:.4f}** with `{Path(pr['embedder']).name}`; "
        f"equal to the candidate's shadow score on {pr['same_as_shadow']} of {s['queries']} queries |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="the SciFact BEIR folder")
    parser.add_argument("--model", required=True, help="the new embedder (a folder or a model name)")
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, help="only the first N queries of the split")
    args = parser.parse_args()
    base = load_settings()
    rollout = base.data_dir / "candidate-shadow-rollout.toml"
    rollout.parent.mkdir(parents=True, exist_ok=True)
    rollout.write_text(ROLLOUT)
    settings = base.model_copy(
        update={
            "collection": COLLECTION,
            "api_keys": f"{TENANT}:{KEY}",
            "cache_enabled": False,  # every query computed, on both sides
            "rate_limit_qps": 10_000.0,
            "rate_limit_burst": 10_000,
            "deadline_ms": 120_000,  # a loaded machine must not degrade (and so not shadow) an answer
            "rollout_config": rollout,
        }
    )
    t0 = time.perf_counter()
    ingest = ingest_for_tenant(settings, args.data)
    report: dict[str, Any] = {
        "model": args.model,
        "split": args.split,
        "ingest": {**ingest, "seconds": round(time.perf_counter() - t0, 1)},
    }
    report.update(asyncio.run(run(args, settings)))
    command = (
        f"RAG_DATA_DIR=… python -m benchmarks.candidate_shadow --data {args.data} --model {args.model}"
        + (f" --split {args.split}" if args.split != "test" else "")
        + (f" --limit {args.limit}" if args.limit else "")
    )
    write_results("candidate_shadow", report, markdown(report, command))
    print(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
