"""Races at the HTTP edge: a CancelledError that is not the request's own never becomes uvicorn's plain-text
500, and a disconnected stream leaves no pending task behind."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.service.service import RetrievalService
from rag.testing.fakes import HashEmbedder
from tests.api.conftest import ACME, ACME_DOCS, live_server, service_settings


@pytest.fixture
def live(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real uvicorn server (its own 500 is plain text: the thing that must never be sent)."""
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=HashEmbedder(64))
    with live_server(app, {"acme": ACME_DOCS}) as base:
        yield base


async def _stray_cancel(*args: object, **kwargs: object) -> None:
    raise asyncio.CancelledError  # as a joined flight cancelled under the caller raised it


@pytest.mark.parametrize("where", ["flight", "service"])
def test_no_response_is_a_text_plain_500(live: str, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """A CancelledError from the shared flight (``_compute``) or from anywhere under the route is an
    error of the server, answered with the JSON error body, never uvicorn's text/plain 500."""
    target = "_compute" if where == "flight" else "query"
    with httpx.Client(base_url=live, timeout=10) as client:
        with monkeypatch.context() as patch:
            patch.setattr(RetrievalService, target, _stray_cancel)
            r = client.post("/query", json={"query": "who hunts mice"}, headers=ACME)
        assert r.headers["content-type"] == "application/json", (r.status_code, r.text)
        assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
        assert r.json()["request_id"] == r.headers["x-request-id"]
        # and the server still answers afterwards
        assert client.post("/query", json={"query": "who hunts mice"}, headers=ACME).status_code == 200
