"""A new embedder staged as a candidate collection (rag/candidates.py) through a running service: the
service opens it beside the one it serves, shadows requests on it (and scores both rankings when feedback
judges them), serves the requests the flag ``candidate_index`` assigns to it, and follows the promotion."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from api.app import create_app
from rag import candidates
from tests.api.conftest import ACME, ACME_DOCS, ADMIN, GLOBEX, GLOBEX_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio

NEW = "hash:64#b"


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(300):  # the follower polls every 50 ms here
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"not seen: {what}")


async def ask(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, object]:
    response = await client.post("/query", json={"query": "who hunts mice", "top_k": 3}, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


async def test_a_staged_embedder_is_shadowed_judged_served_by_flag_and_promoted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "rollout.toml"
    config.write_text(
        """
[[flags]]
name = "candidate_index"
enabled = true
rollout_percent = 0.0
allowlist = ["globex"]
unit = "tenant"
[shadow]
rate = 1.0
candidate = "candidate_index"
"""
    )
    settings = service_settings(
        tmp_path, monkeypatch, rollout_config=config, cache_enabled=False, version_poll_ms=50
    )
    app = create_app(settings)
    service = app.state.service
    lifecycle = service.lifecycle
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        served = lifecycle.runtime.snapshot.version
        # no candidate yet: the shadow says so, the flag's tenant is served by the collection
        before_none = metric("rag_shadow_runs_total", flag="candidate_index", status="no_candidate")
        assert (await ask(client, GLOBEX))["index_version"] == served
        await ask(client, ACME)
        assert metric("rag_shadow_runs_total", flag="candidate_index", status="no_candidate") > before_none

        report = await asyncio.to_thread(candidates.stage, settings, NEW, progress=False)
        await until(lambda: lifecycle.candidate is not None, "the candidate opened")
        staged = lifecycle.candidate.snapshot.version
        assert staged == report.version and lifecycle.candidate.embedder.name == NEW
        index = (await client.get("/admin/index", headers=ADMIN)).json()
        assert index["candidate"]["embedder"] == NEW and index["index_version"] == served

        # acme is on control: answered by the collection, shadowed on the candidate
        ok_before = metric("rag_shadow_runs_total", flag="candidate_index", status="ok")
        judged_before = sum(
            metric("rag_shadow_judged_total", flag="candidate_index", outcome=o)
            for o in ("candidate", "served", "tie")
        )
        answer = await ask(client, ACME)
        assert (
            answer["index_version"] == served and answer["plan"]["variants"]["candidate_index"] == "control"
        )
        await until(
            lambda: metric("rag_shadow_runs_total", flag="candidate_index", status="ok") > ok_before,
            "the shadow run on the candidate",
        )
        results = answer["results"]
        assert isinstance(results, list) and results
        judged = await client.post(
            "/feedback",
            json={"request_id": answer["request_id"], "relevance": {results[0]["doc_id"]: 3}},
            headers=ACME,
        )
        assert judged.status_code == 200, judged.text
        judged_after = sum(
            metric("rag_shadow_judged_total", flag="candidate_index", outcome=o)
            for o in ("candidate", "served", "tie")
        )
        assert judged_after == judged_before + 1
        assert metric("rag_shadow_judged_quality_total", flag="candidate_index", side="served") > 0

        # globex is on the flag: served by the candidate, with its own documents only
        answer = await ask(client, GLOBEX)
        assert answer["index_version"] == staged and answer["plan"]["variants"]["candidate_index"] == "on"
        globex_ids = {d["id"] for d in GLOBEX_DOCS}
        assert {r["doc_id"] for r in answer["results"]} <= globex_ids  # type: ignore[union-attr]

        # promotion: a new version of the collection in the candidate's space; the candidate goes away
        promoted = await asyncio.to_thread(candidates.promote, settings, progress=False)
        assert promoted.reused == promoted.chunks and promoted.embedded == 0
        await until(
            lambda: lifecycle.runtime.snapshot.version == promoted.version and lifecycle.candidate is None,
            "the promoted version served and the candidate closed",
        )
        assert lifecycle.runtime.embedder.name == NEW
        answer = await ask(client, GLOBEX)  # the flag has nothing left to choose: the collection answers
        assert answer["index_version"] == promoted.version and answer["results"]
        assert (await client.get("/admin/index", headers=ADMIN)).json()["candidate"] is None
