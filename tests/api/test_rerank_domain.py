"""Through the HTTP API: a configured reranker that was not validated on the served collection does not
rerank it — answers say ``rerank/unvalidated`` and ``/ready`` says why — unless the operator overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from rag.testing.tiny_models import build_tiny_cross_encoder
from tests.api.conftest import ACME, ACME_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("override", [False, True])
async def test_an_unvalidated_reranker_does_not_rerank_unless_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, override: bool
) -> None:
    model = build_tiny_cross_encoder(tmp_path / "tiny-ce", [f"{d['title']} {d['text']}" for d in ACME_DOCS])
    settings = service_settings(
        tmp_path,
        monkeypatch,
        reranker_model=str(model),
        reranker_allow_unvalidated=override,
        deadline_ms=30_000,  # no deadline degradation from a busy machine
    )
    async with serve(create_app(settings)) as client:
        await ingest(client, "acme", ACME_DOCS)
        body = (
            await client.post("/query", json={"query": "who hunts mice", "top_k": 3}, headers=ACME)
        ).json()
        ready = (await client.get("/ready")).json()
    rerank = [d for d in body["degraded"] if d["step"] == "rerank"]
    if override:
        assert body["cost"]["rerank_pairs"] == 3 and rerank == []
        assert ready["reranker_refused"] is None
    else:
        assert body["cost"]["rerank_pairs"] == 0
        assert [d["code"] for d in rerank] == ["unvalidated"]
        assert "no domain record" in rerank[0]["reason"] and "'svc'" in rerank[0]["reason"]
        assert ready["reranker_refused"] == rerank[0]["reason"]
