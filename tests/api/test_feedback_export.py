"""Feedback becomes training data: clicks, graded relevance and ratings sent through POST /feedback are
logged with their query and the doc ids shown, and `rag feedback export` writes them as a BEIR folder
that the trainers read — one tenant's feedback only, never another's."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.config import Settings
from rag.io.feedback_log import log_root, read_events
from rag.io.sources import read_beir_jsonl, read_qrels, read_queries
from rag.offline.feedback_export import export, query_id
from tests.api.conftest import ACME, ACME_DOCS, GLOBEX, GLOBEX_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio

SLACK = {"deadline_ms": 10_000, "cache_enabled": False}  # every answer routed (a cached one has no decision)


async def answer(client: httpx.AsyncClient, query: str, headers: dict[str, str]) -> tuple[str, list[str]]:
    r = await client.post("/query", json={"query": query, "top_k": 3}, headers=headers)
    assert r.status_code == 200, r.text
    body = r.json()
    return body["request_id"], [hit["doc_id"] for hit in body["results"]]


async def rate(client: httpx.AsyncClient, headers: dict[str, str], rid: str, **signal: Any) -> None:
    r = await client.post("/feedback", json={"request_id": rid, **signal}, headers=headers)
    assert r.status_code == 200, r.text


def run_export(settings: Settings, tenant: str, out: Path) -> dict[str, Any]:
    """`rag feedback export` as a user runs it: a process of its own, reading the service's data dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_COLLECTION": settings.collection,
        "RAG_EMBEDDER_MODEL": settings.embedder_model,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "rag", "feedback", "export", "--tenant", tenant, "--output", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    report: dict[str, Any] = json.loads(proc.stdout)
    return report


async def test_feedback_through_the_api_is_exported_as_qrels_of_its_tenant_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings(tmp_path, monkeypatch, **SLACK)
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        # acme: the second result clicked, twice (two users); the first was skipped both times
        mice = []
        for _ in range(2):
            rid, shown = await answer(client, "who hunts mice", ACME)
            await rate(client, ACME, rid, clicked=[shown[1]])
            mice.append(shown)
        assert mice[0] == mice[1]
        # acme: graded relevance, an explicit negative among it
        rid, _ = await answer(client, "Insects  making HONEY", ACME)
        await rate(client, ACME, rid, relevance={"bee": 3, "cat": 0})
        # acme: a bad rating only: negatives, no positive -> not exported
        rid, bad_shown = await answer(client, "small carnivorous mammals", ACME)
        await rate(client, ACME, rid, rating=1)
        # globex: its own documents, one of them with acme's doc id "cat"
        rid, globex_shown = await answer(client, "who hunts mice with turbines", GLOBEX)
        await rate(client, GLOBEX, rid, clicked=["plan"], rating=5)
        rid, _ = await answer(client, "secret plan", GLOBEX)
        await rate(client, GLOBEX, rid, relevance={"plan": 2, "cat": 1})

    # the log: the query text and the shown ids kept with each feedback, per tenant
    logged = list(read_events(log_root(settings.data_dir, settings.collection), "acme"))
    assert [e.query for e in logged] == [
        "who hunts mice",
        "who hunts mice",
        "Insects  making HONEY",
        "small carnivorous mammals",
    ]
    assert [list(e.shown) for e in logged[:2]] == mice and logged[3].rating == 1.0

    out = tmp_path / "acme-export"
    report = run_export(settings, "acme", out)
    assert report["events"] == 4 and report["queries"] == 2 and report["queries_without_positive"] == 1
    assert report["corpus_documents"] == len(ACME_DOCS)

    queries = read_queries(out / "queries.jsonl")
    qrels = read_qrels(out / "qrels" / "train.tsv")
    corpus = {d.doc_id: d for d in read_beir_jsonl(out / "corpus.jsonl")}
    q_mice, q_honey = query_id("who hunts mice"), query_id("insects making honey")
    assert queries == {q_honey: "Insects  making HONEY", q_mice: "who hunts mice"}
    assert qrels == {
        q_mice: {mice[0][0]: 0, mice[0][1]: 1},  # skipped above the click: a negative; the click: 1
        q_honey: {"bee": 3, "cat": 0},
    }
    # the corpus: acme's documents, as acme ingested them; nothing of globex anywhere in the folder
    assert {d: (c.title, c.text) for d, c in corpus.items()} == {
        d["id"]: (d["title"], d["text"]) for d in ACME_DOCS
    }
    everything = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    for secret in ("turbines", "secret plan", "Catalogue", "plan\t"):
        assert secret not in everything
    assert set(bad_shown) <= set(corpus)

    # globex's export holds globex's feedback, on globex's documents
    theirs = export(settings, "globex", tmp_path / "globex-export")
    assert theirs["queries"] == 2
    globex_qrels = read_qrels(tmp_path / "globex-export" / "qrels" / "train.tsv")
    assert globex_qrels[query_id("secret plan")] == {"plan": 2, "cat": 1}
    turbines = globex_qrels[query_id("who hunts mice with turbines")]
    assert turbines["plan"] == 1 and set(turbines) <= set(globex_shown)
    globex_corpus = {d.doc_id: d.text for d in read_beir_jsonl(tmp_path / "globex-export" / "corpus.jsonl")}
    assert globex_corpus["cat"].startswith("The globex product catalogue")


async def test_no_log_when_it_is_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = service_settings(tmp_path, monkeypatch, feedback_log_mb=0, **SLACK)
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        rid, shown = await answer(client, "who hunts mice", ACME)
        await rate(client, ACME, rid, clicked=[shown[0]])
        assert app.state.service.routing.learner.feedback_log is None
    assert not log_root(settings.data_dir, settings.collection).exists()


@pytest.mark.slow
async def test_the_reranker_trainer_learns_from_an_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.config import load_settings
    from rag.offline.reranker_training import TrainConfig, train_reranker
    from rag.rerank.cross_encoder import CrossEncoderReranker
    from rag.testing.tiny_models import build_tiny_cross_encoder

    settings = service_settings(tmp_path, monkeypatch, **SLACK)
    app = create_app(settings)
    async with serve(app) as client:
        fillers = [
            {"id": f"f{i}", "title": f"Note {i}", "text": f"mice honey pets note {i}"} for i in range(5)
        ]
        await ingest(client, "acme", ACME_DOCS + fillers)
        for query, good in (
            ("who hunts mice", "owl"),
            ("insects making honey", "bee"),
            ("purring pets", "cat"),
        ):
            rid, _ = await answer(client, query, ACME)
            await rate(client, ACME, rid, relevance={good: 3})
            # (the trainer mines its negatives among the unjudged hits: a grade-0 doc is left out of them)
    out = tmp_path / "acme-export"
    assert export(settings, "acme", out)["queries"] == 3
    tiny = build_tiny_cross_encoder(
        tmp_path / "tiny-ce",
        [f"{d['title']} {d['text']}" for d in ACME_DOCS + fillers]
        + ["who hunts mice insects making honey purring pets"],
    )
    trainer = load_settings(data_dir=tmp_path / "train-data", embedder_model="hash:64")  # its own collection
    model = tmp_path / "reranker"
    report = await asyncio.to_thread(  # the trainer runs its own event loop
        train_reranker,
        trainer,
        out,
        model,
        config=TrainConfig(
            negatives=1,
            in_batch_negatives=1,
            mine_depth=3,
            epochs=1,
            batch_size=2,
            max_length=32,
            validation_queries=0,
            base_model=str(tiny),
        ),
    )
    assert report["train_queries"] == 3 and report["groups"] == 3
    assert CrossEncoderReranker(str(model), max_length=32).score("who hunts mice", ["owls hunt"]).shape == (
        1,
    )
