"""Feedback → training data → a reranker, end to end: SciFact's train qrels replayed as users' feedback.

    RAG_DATA_DIR=/work/bench/eval/data-fb HF_HUB_OFFLINE=1 \\
      python -m benchmarks.feedback_training --data ../shared/data/scifact --work /tmp/fb [--limit N] \\
        [--signal click|relevance] [--train --epochs 0.25] [--base-url URL --api-key KEY]

1. **Serve SciFact to a tenant.** The corpus is ingested for tenant ``scifact`` into the collection
   ``fb-scifact`` of ``RAG_DATA_DIR`` (a tenant sees its own documents only). When ``rag eval`` has already
   embedded the corpus there (its cached collection), its vectors are given to this ingest (bring your
   own vectors, un-rotated), so nothing is embedded twice. Then the service runs in process (the FastAPI
   app over httpx's ASGI transport, lifespan and all), or ``--base-url`` names a live ``rag serve`` of
   that data dir and collection.
2. **Replay.** For each train query: ``POST /query`` (top 10), then ``POST /feedback`` as a simulated
   user: ``click`` (default) clicks the shown documents the qrels call relevant (``[]`` when none was
   shown); ``relevance`` sends the qrels' grades of the shown documents plus 0 for the shown others.
3. **Export.** ``rag feedback export`` of tenant ``scifact`` (in process: the same function) into
   ``WORK/scifact`` with ``--corpus`` linking SciFact's corpus.jsonl, so a trainer opening that folder
   uses ``rag eval``'s cached collection (the folder's name) and embeds nothing. Reported: queries,
   positives (all of which are train-qrels positives by construction) and negatives, and how many of the
   train qrels' positives the feedback recovered (only what the service showed can be clicked).
4. **Train** (``--train``): ``rag train-reranker --data WORK/scifact`` for ``--epochs`` (brief), with its
   held-out blend choice; the report has the training time and the held-out nDCG@10 per blend weight.

SciFact (CC BY-NC) stays outside the repository: everything is written under ``--work`` and the data dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from rag.config import Settings, load_settings
from rag.index.segments import VersionView
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.io.sources import read_beir_jsonl, read_qrels, read_queries
from rag.offline.datasets import dataset_collection
from rag.types import Document, GivenVectors

TENANT = "scifact"
KEY = "scifact-key-0123456789abcdef"
COLLECTION = "fb-scifact"


def source_vectors(settings: Settings, data: Path) -> dict[str, np.ndarray] | None:
    """Each document's un-rotated chunk vectors from ``rag eval``'s cached collection (None: not there)."""
    source = settings.model_copy(update={"collection": dataset_collection(data, settings)})
    versions = VersionStore(source.versions_dir)
    snapshot = IndexSnapshot.load(versions)
    view = VersionView.load(versions)
    if snapshot is None or view is None:
        return None
    rotation = snapshot.rotation
    by_point = view.vectors_of(versions, [c.point_id for c in snapshot.chunks])
    out: dict[str, list[tuple[int, np.ndarray]]] = {}
    for chunk in snapshot.chunks:
        vec = by_point[chunk.point_id]
        out.setdefault(chunk.doc_id, []).append(
            (chunk.ordinal, vec if rotation is None else vec @ rotation.T)
        )
    return {d: np.stack([v for _, v in sorted(rows, key=lambda r: r[0])]) for d, rows in out.items()}


def ingest_for_tenant(settings: Settings, data: Path) -> dict[str, Any]:
    """The corpus as tenant ``scifact``'s documents (idempotent), with the cached vectors when there."""
    from rag.index.ingest import Ingestor
    from rag.runtime import build_embedder, ingest_params, open_store

    vectors = source_vectors(settings, data)
    docs = (
        Document(
            d.doc_id,
            d.text,
            d.title,
            d.metadata,
            tenant=TENANT,
            vectors=None if vectors is None else GivenVectors(vectors[d.doc_id]),
        )
        for d in read_beir_jsonl(data / "corpus.jsonl")
    )
    store = open_store(settings)
    try:
        report = Ingestor(ingest_params(settings), build_embedder(settings), store, progress=True).ingest(
            docs, embedding_model=settings.embedder_model if vectors is not None else None
        )
    finally:
        store.close()
    return {**report.as_dict(), "given_vectors": vectors is not None}


@asynccontextmanager
async def client_for(settings: Settings, base_url: str | None, key: str) -> AsyncIterator[httpx.AsyncClient]:
    headers = {"Authorization": f"Bearer {key}"}
    if base_url:
        async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=60) as client:
            yield client
        return
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await app.state.service.lifecycle.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://rag.test", headers=headers, timeout=60
        ) as client:
            yield client


def simulated(signal: str, shown: list[str], judged: dict[str, int]) -> dict[str, Any]:
    """The feedback a user who knows the qrels would send on ``shown``."""
    if signal == "click":
        return {"clicked": [d for d in shown if judged.get(d, 0) > 0]}
    return {"relevance": {d: float(judged.get(d, 0)) for d in shown}}


async def replay(
    settings: Settings,
    base_url: str | None,
    key: str,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    signal: str,
) -> dict[str, Any]:
    counts = {"queries": 0, "feedback_accepted": 0, "feedback_refused": 0, "shown_relevant": 0}
    started = time.perf_counter()
    async with client_for(settings, base_url, key) as client:
        for qid, judged in qrels.items():
            r = await client.post("/query", json={"query": queries[qid], "top_k": 10})
            r.raise_for_status()
            body = r.json()
            shown = [h["doc_id"] for h in body["results"]]
            counts["queries"] += 1
            counts["shown_relevant"] += sum(1 for d in shown if judged.get(d, 0) > 0)
            f = await client.post(
                "/feedback", json={"request_id": body["request_id"], **simulated(signal, shown, judged)}
            )
            counts["feedback_accepted" if f.status_code == 200 else "feedback_refused"] += 1
    return {**counts, "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True, help="the SciFact BEIR folder")
    parser.add_argument("--work", type=Path, required=True, help="where the export and the model go")
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, help="only the first N queries of the split")
    parser.add_argument("--signal", choices=["click", "relevance"], default="click")
    parser.add_argument(
        "--base-url", help="a live `rag serve` (its RAG_API_KEYS must hold scifact:--api-key)"
    )
    parser.add_argument("--api-key", default=KEY)
    parser.add_argument("--train", action="store_true", help="train the reranker from the export")
    parser.add_argument("--epochs", type=float, default=0.25)
    args = parser.parse_args()

    base = load_settings()
    serving = base.model_copy(
        update={
            "collection": COLLECTION,
            "api_keys": f"{TENANT}:{args.api_key}",
            "cache_enabled": False,  # a cached answer has no routing decision to rate
            "rate_limit_qps": 10_000.0,
            "rate_limit_burst": 10_000,
            "deadline_ms": 60_000,  # a loaded machine must not degrade (and so not record) an answer
        }
    )
    report: dict[str, Any] = {"signal": args.signal, "split": args.split}
    t0 = time.perf_counter()
    if not args.base_url:
        report["ingest"] = ingest_for_tenant(serving, args.data)
        report["ingest"]["seconds"] = round(time.perf_counter() - t0, 1)
    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    queries = read_queries(args.data / "queries.jsonl")
    qids = [q for q in qrels if q in queries][: args.limit or None]
    qrels = {q: qrels[q] for q in qids}
    report["replay"] = asyncio.run(replay(serving, args.base_url, args.api_key, queries, qrels, args.signal))

    from rag.offline.feedback_export import export

    out = args.work / "scifact"  # the folder's name picks `rag eval`'s cached collection for the trainer
    exported = export(serving, TENANT, out, corpus=str(args.data / "corpus.jsonl"))
    got = read_qrels(out / "qrels" / "train.tsv")
    positives = {(q, d) for q, docs in qrels.items() for d, g in docs.items() if g > 0}
    text_of = {queries[q]: q for q in qrels}
    fb_queries = read_queries(out / "queries.jsonl")
    recovered = {
        (text_of[fb_queries[q]], d)
        for q, docs in got.items()
        for d, g in docs.items()
        if g > 0 and fb_queries[q] in text_of
    }
    report["export"] = {
        **{k: v for k, v in exported.items() if k not in ("output", "corpus")},
        "train_positives": len(positives),
        "positives_recovered": len(recovered & positives),
        "positives_not_in_qrels": len(recovered - positives),
    }
    print(json.dumps(report, indent=2))

    if args.train:
        from rag.offline.reranker_training import TrainConfig, train_reranker

        trainer = base.model_copy(update={"collection": "default"})  # the cached collection of --data
        model = args.work / "reranker"
        t1 = time.perf_counter()
        trained = train_reranker(trainer, out, model, config=TrainConfig(epochs=args.epochs))
        report["train"] = {
            "seconds_wall": round(time.perf_counter() - t1, 1),
            **{
                k: trained[k]
                for k in ("train_queries", "validation_queries", "groups", "pairs_per_epoch", "seconds")
            },
            "first_stage_weight": trained["first_stage_weight"],
            "validation_ndcg@10": trained.get("validation_ndcg@10"),
            "model": str(model),
        }
    report["load_average"] = os.getloadavg()
    (args.work / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
