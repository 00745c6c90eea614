"""Races at the HTTP edge: a CancelledError that is not the request's own never becomes uvicorn's plain-text
500, and a disconnected stream leaves no pending task behind."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import numpy as np
import pytest
from starlette.types import Message

from api.app import create_app
from rag.dense.hashing import HashEmbedder
from rag.service.cached_retrieval import CachedRetrieval
from rag.service.queries import QueryHandler
from tests.api.conftest import ACME, ACME_DOCS, ingest, live_server, serve, service_settings


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real uvicorn server (its own 500 is plain text: the thing that must never be sent)."""
    settings = service_settings(tmp_path, monkeypatch, deadline_ms=10_000)  # no 503 from a busy machine
    app = create_app(settings, embedder=HashEmbedder(64))
    with live_server(app, {"acme": ACME_DOCS}) as base:
        yield base


async def _stray_cancel(*args: object, **kwargs: object) -> None:
    raise asyncio.CancelledError  # as a joined flight cancelled under the caller raised it


@pytest.mark.parametrize("where", ["flight", "service"])
def test_no_response_is_a_text_plain_500(live: str, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A CancelledError from the shared flight (``_compute``) or from anywhere under the route is an
    error of the server, answered with the JSON error body, never uvicorn's text/plain 500."""
    owner, target = (CachedRetrieval, "_compute") if where == "flight" else (QueryHandler, "query")
    with httpx.Client(base_url=live, timeout=10) as client:
        with monkeypatch.context() as patch:
            patch.setattr(owner, target, _stray_cancel)
            r = client.post("/query", json={"query": "who hunts mice"}, headers=ACME)
        assert r.headers["content-type"] == "application/json", (r.status_code, r.text)
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        # and the server still answers afterwards
        after = client.post("/query", json={"query": "who hunts mice"}, headers=ACME)
        assert after.status_code == 200, after.text


class GatedEmbedder(HashEmbedder):
    """Embeds a text holding ``GATE`` only once the test opens the gate (the query is mid-flight)."""

    def __init__(self) -> None:
        super().__init__(64)
        self.gate = threading.Event()

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if any("GATE" in t for t in texts):
            self.gate.wait(30)
        return super().embed(texts, batch_size=batch_size, progress=progress)


def _queue_waiters() -> list[asyncio.Task[object]]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "") == "Queue.get"
    ]


@pytest.mark.anyio
async def test_a_disconnected_stream_leaves_no_pending_waiter_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ASGI app driven directly, as uvicorn drives it (spec 2.3: Starlette listens for the
    disconnect and cancels the stream): the client leaves after the first event, while the query is
    still embedding; afterwards no ``events.get()`` waiter is left pending ("Task was destroyed but it
    is pending")."""
    embedder = GatedEmbedder()
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=embedder)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        body = json.dumps({"query": "GATE who hunts mice"}).encode()
        left = asyncio.Event()
        received: list[Message] = []
        requested = False

        async def receive() -> Message:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": body, "more_body": False}
            await left.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            received.append(message)
            if message["type"] == "http.response.body" and message.get("body"):
                left.set()  # the first event arrived: the client goes away

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/query/stream",
            "raw_path": b"/query/stream",
            "query_string": b"",
            "root_path": "",
            "headers": [
                (b"host", b"rag.test"),
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"authorization", ACME["Authorization"].encode()),
            ],
            "client": ("127.0.0.1", 50000),
            "server": ("rag.test", 80),
        }
        try:
            await app(scope, receive, send)
            for _ in range(5):
                await asyncio.sleep(0)  # loop turns (no timing): let cancellations land
            assert received[0]["status"] == 200
            assert b"event: plan" in received[1]["body"]
            assert _queue_waiters() == [], "the stream's events.get() waiter was left pending"
        finally:
            embedder.gate.set()
