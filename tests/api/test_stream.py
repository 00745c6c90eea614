"""POST /query/stream: Server-Sent Events in step order, errors as events, and cancellation on disconnect."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.dense.hashing import HashEmbedder
from rag.retrieval.retrievers import BM25Retriever
from rag.testing.fakes import FailingEmbedder, OverlapReranker
from tests.api.conftest import ACME, ACME_DOCS, ingest, live_server, serve, service_settings

pytestmark = pytest.mark.anyio


def parse_sse(text: str) -> list[tuple[str, dict[str, Any]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        events.append((lines["event"], json.loads(lines["data"])))
    return events


async def test_stream_reports_each_step_in_order_then_the_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = OverlapReranker()
    app = create_app(service_settings(tmp_path, monkeypatch), reranker=reranker)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        async with client.stream(
            "POST", "/query/stream", json={"query": "who hunts mice", "top_k": 2}, headers=ACME
        ) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            events = parse_sse((await r.aread()).decode())
    names = [name for name, _ in events]
    assert names[:2] == ["plan", "cache.l1"]
    assert names[-4:] == ["fuse", "rerank.gate", "rerank", "result"]
    # BM25 runs beside the embedding (the floor, started at once), dense after the cache's L2 lookup
    assert sorted(names[2:-4]) == ["cache.l2", "embed", "retrieve.bm25", "retrieve.dense"]
    assert names.index("embed") < names.index("cache.l2") < names.index("retrieve.dense")
    for name, data in events[:-1]:
        assert data["step"] == name and data["ms"] >= 0
    assert events[-2][1]["pairs"] == 3  # all of acme's documents went to the reranker
    result = events[-1][1]
    assert result["route"] == "hybrid-rerank" and len(result["results"]) == 2
    assert list(result["timings_ms"]) == names[:-1]


async def test_a_failing_step_degrades_the_answer_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=FailingEmbedder(64))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        r = await client.post("/query/stream", json={"query": "EXPLODE mice"}, headers=ACME)
        events = parse_sse(r.text)
        assert events[-1][0] == "result"
        degraded = events[-1][1]["degraded"]
        assert [(d["step"], d["code"]) for d in degraded] == [("embed", "error"), ("retrieve", "bm25_only")]
        assert "embedder failure injected" in degraded[0]["reason"]
        assert events[-1][1]["results"], "BM25 answered"


async def test_no_retriever_left_ends_the_stream_with_an_error_event(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=FailingEmbedder(64))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)

        def broken_bm25(*args: object, **kwargs: object) -> None:
            raise OSError("bm25 snapshot unreadable")

        monkeypatch.setattr(BM25Retriever, "retrieve", broken_bm25)  # the dense side fails by EXPLODE
        r = await client.post("/query/stream", json={"query": "EXPLODE mice"}, headers=ACME)
        events = parse_sse(r.text)
        assert events[-1][0] == "error" and events[-1][1]["code"] == "retrieval_unavailable"
        assert "bm25 snapshot unreadable" in events[-1][1]["message"]
        assert "result" not in [name for name, _ in events]
        # the non-streaming route says the same with a 503
        r = await client.post("/query", json={"query": "EXPLODE mice"}, headers=ACME)
        assert r.status_code == 503 and r.json()["error"]["code"] == "retrieval_unavailable"


async def test_stream_refusals_happen_before_the_stream(client: httpx.AsyncClient) -> None:
    assert (await client.post("/query/stream", json={"query": "mice"})).status_code == 401
    r = await client.post("/query/stream", json={"query": "mice", "top_k": 1000}, headers=ACME)
    assert r.status_code == 422 and r.headers["content-type"] == "application/json"


@pytest.fixture
def live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, HashEmbedder, OverlapReranker]]:
    """A real server (client disconnects need a real socket) with acme's documents."""
    reranker, embedder = OverlapReranker(), HashEmbedder(64)
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=embedder, reranker=reranker)
    with live_server(app, {"acme": ACME_DOCS}) as base:
        yield base, embedder, reranker


def test_closing_the_stream_cancels_the_steps_not_yet_started(
    live: tuple[str, HashEmbedder, OverlapReranker],
) -> None:
    base, embedder, reranker = live
    delay = 0.8  # the query's embedding takes this long; the client leaves during it
    embedder._delay_s = delay
    with (
        httpx.Client(base_url=base, timeout=10) as client,
        client.stream("POST", "/query/stream", json={"query": "who hunts mice"}, headers=ACME) as r,
    ):
        assert r.status_code == 200
        assert next(r.iter_lines()) == "event: plan"
    # the connection is closed here, while the embedding is still running
    time.sleep(delay + 0.7)
    assert reranker.calls == [], "rerank ran after the client had gone"
    embedder._delay_s = 0.0
    with httpx.Client(base_url=base, timeout=10) as client:  # and the service is fine afterwards
        r = client.post("/query", json={"query": "who hunts mice"}, headers=ACME)
        assert r.status_code == 200 and reranker.calls == [3]
