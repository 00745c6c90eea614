"""The router through the service: plans with features and variants, cost and budgets (429), A/B flags,
auto-fallback with its admin routes, shadow runs, hot-reloaded rollout config, and /feedback."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from api.app import create_app
from rag.testing.fakes import OverlapReranker
from tests.api.conftest import ACME, ACME_DOCS, ADMIN, GLOBEX, GLOBEX_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def ask(
    client: httpx.AsyncClient, query: str, headers: dict[str, str] = ACME, **body: object
) -> httpx.Response:
    return await client.post("/query", json={"query": query, "top_k": 3, **body}, headers=headers)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


async def test_plan_shows_features_router_budget_and_cost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, cache_enabled=False), reranker=OverlapReranker())
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        before = metric("rag_router_decisions_total", arm="hybrid-gated", policy="rules", complexity="simple")
        body = (await ask(client, "Which animal hunts mice at night?")).json()
        plan = body["plan"]
        assert plan["router"]["arm"] == "hybrid-gated" and plan["router"]["policy"] == "rules"
        assert plan["features"]["question"] is True and plan["features"]["terms"] >= 3
        assert plan["budget"]["level"] == "ok" and plan["rerank_gate"] == 0.0
        assert body["cost"]["cpu_ms"] > 0 and body["cost"]["money"] > 0 and body["cost"]["currency"] == "USD"
        after = metric("rag_router_decisions_total", arm="hybrid-gated", policy="rules", complexity="simple")
        assert after == before + 1
        assert metric("rag_cost_total", step="rerank", tenant="acme") > 0
        assert metric("rag_step_cpu_seconds_per_unit", step="retrieve.bm25") > 0
        cost = (await ask(client, "Which animal hunts mice at night?", profile="cost")).json()
        assert cost["plan"]["rerank_depth"] == 0 and cost["cost"]["rerank_pairs"] == 0


async def test_hard_budget_rejects_or_serves_a_cheap_plan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path / "rollout.toml",
        """
[budgets.tenants.acme]
per_hour = 0.0
over_budget = "reject"
[budgets.tenants.globex]
per_hour = 0.0
""",
    )
    settings = service_settings(tmp_path, monkeypatch, rollout_config=config, cache_enabled=False)
    app = create_app(settings, reranker=OverlapReranker())
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        refused = await ask(client, "who hunts mice")
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "60"
        assert (
            refused.json()["error"]["code"] == "budget_exceeded"
            and "acme" in refused.json()["error"]["message"]
        )
        cheap = await ask(client, "who hunts mice", GLOBEX)
        assert cheap.status_code == 200
        plan = cheap.json()["plan"]
        assert (
            plan["retrievers"] == ["bm25"] and plan["rerank_depth"] == 0 and plan["budget"]["level"] == "over"
        )


async def test_ab_variant_is_in_the_response_and_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path / "rollout.toml",
        """
[[flags]]
name = "adaptive_rerank"
enabled = true
rollout_percent = 0
allowlist = ["acme"]
""",
    )
    app = create_app(
        service_settings(tmp_path, monkeypatch, rollout_config=config), reranker=OverlapReranker()
    )
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        on = (await ask(client, "who hunts mice")).json()
        off = (await ask(client, "who hunts mice", GLOBEX)).json()
        assert (
            on["plan"]["variants"] == {"adaptive_rerank": "on"}
            and on["plan"]["router"]["arm"] == "hybrid-gated"
        )
        assert (
            off["plan"]["variants"] == {"adaptive_rerank": "control"}
            and off["plan"]["router"]["arm"] == "hybrid-rerank"
        )
        assert metric("rag_rollout_assignments_total", flag="adaptive_rerank", variant="control") >= 1


async def test_auto_fallback_trips_on_errors_and_admin_resets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path / "rollout.toml",
        """
[[flags]]
name = "multi_query"
enabled = true
rollout_percent = 100
[fallback]
min_samples = 3
error_rate = 0.5
""",
    )
    settings = service_settings(tmp_path, monkeypatch, rollout_config=config, cache_enabled=False)
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        service = app.state.service
        for _ in range(3):  # the candidate path's answers come back degraded (qdrant forced open): not ok
            await client.post("/admin/breakers/qdrant", json={"state": "open"}, headers=ADMIN)
            assert (await ask(client, "who hunts mice")).status_code == 200
        status = (await client.get("/admin/fallback", headers=ADMIN, params={"tenant": "acme"})).json()
        assert status[0]["flag"] == "multi_query" and status[0]["tripped"] is True
        assert "error" in status[0]["reason"]
        body = (await ask(client, "who hunts mice")).json()
        assert body["plan"]["variants"]["multi_query"] == "control" and body["plan"]["fallback"] == [
            "multi_query"
        ]
        assert metric("rag_fallback_tripped", tenant="acme", flag="multi_query") == 1
        bad = await client.post("/admin/fallback/reset", json={"tenant": "NOT A TENANT"}, headers=ADMIN)
        assert bad.status_code == 422
        assert service.routing.ledger.fallback.is_tripped(
            ("acme", "multi_query")
        )  # the refused call changed nothing
        r = await client.post("/admin/fallback/reset", json={"tenant": "acme"}, headers=ADMIN)
        assert r.json() == {"reset": 1}
        assert metric("rag_fallback_tripped", tenant="acme", flag="multi_query") == 0
        assert (await client.post("/admin/fallback/reset", json={}, headers=ACME)).status_code == 403


async def test_rollout_config_is_replaced_validated_and_reloaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path / "rollout.toml", '[router]\npolicy = "rules"\n')
    app = create_app(service_settings(tmp_path, monkeypatch, rollout_config=config))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        service = app.state.service
        first = (await client.get("/admin/rollout", headers=ADMIN)).json()
        assert first["config"]["router"]["policy"] == "rules"
        bad = await client.put("/admin/rollout", json={"prices": {"rerank_per_1k_pair": 1}}, headers=ADMIN)
        assert bad.status_code == 422 and "prices.rerank_per_1k_pair" in bad.json()["error"]["message"]
        assert (await client.get("/admin/rollout", headers=ADMIN)).json()["version"] == first["version"]
        good = await client.put(
            "/admin/rollout", json={"prices": {"rerank_per_1k_pairs": 1.5}}, headers=ADMIN
        )
        assert good.status_code == 200 and good.json()["config"]["prices"]["rerank_per_1k_pairs"] == 1.5
        assert service.routing.prices.rerank_per_1k_pairs == 1.5
        # the file changes: a bad edit is refused with the reason, the old config keeps serving
        config.write_text("[budgets]\nsoft_fraction = 7\n")
        assert await service.routing.rollout.watcher.check_now() is False
        assert "budgets.soft_fraction" in (service.routing.rollout.watcher.last_error or "")
        assert service.routing.prices.rerank_per_1k_pairs == 1.5
        config.write_text("[budgets]\nsoft_fraction = 0.5\n")
        assert await service.routing.rollout.watcher.check_now() is True
        assert service.routing.budgets.policy.soft_fraction == 0.5
        assert (await client.put("/admin/rollout", json={}, headers=ACME)).status_code == 403


async def test_feedback_updates_the_bandit_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, cache_enabled=False), reranker=OverlapReranker())
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        answered = (await ask(client, "who hunts mice")).json()
        rid, top = answered["request_id"], answered["results"][0]["doc_id"]
        bandit = app.state.service.routing.learner.bandit
        arm = answered["plan"]["router"]["arm"]
        before = bandit.counts[arm]
        assert (await client.post("/feedback", json={"request_id": rid}, headers=ACME)).status_code == 422
        assert (
            await client.post("/feedback", json={"request_id": rid, "rating": 9}, headers=ACME)
        ).status_code == 422
        assert (
            await client.post("/feedback", json={"request_id": rid, "clicked": [top]}, headers=GLOBEX)
        ).status_code == 404
        r = await client.post("/feedback", json={"request_id": rid, "clicked": [top]}, headers=ACME)
        assert r.status_code == 200, r.text
        out = r.json()
        assert out["arm"] == arm and out["quality"] == 1.0 and out["reward"] <= 1.0
        assert bandit.counts[arm] == before + 1
        again = await client.post("/feedback", json={"request_id": rid, "rating": 5}, headers=ACME)
        assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_request"


async def test_bandit_state_persists_across_restarts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = service_settings(tmp_path, monkeypatch, cache_enabled=False)
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        rid = (await ask(client, "who hunts mice")).json()["request_id"]
        assert (
            await client.post("/feedback", json={"request_id": rid, "rating": 4}, headers=ACME)
        ).status_code == 200
        counts = dict(app.state.service.routing.learner.bandit.counts)
    state_file = settings.data_dir / "bandit" / f"{settings.collection}.json"
    assert json.loads(state_file.read_text())["counts"] == counts
    again = create_app(settings)
    async with serve(again):
        assert again.state.service.routing.learner.bandit.counts == counts


async def test_shadow_runs_the_candidate_after_the_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(
        tmp_path / "rollout.toml",
        """
[[flags]]
name = "adaptive_rerank"
enabled = false
[shadow]
rate = 1.0
candidate = "adaptive_rerank"
""",
    )
    settings = service_settings(tmp_path, monkeypatch, rollout_config=config, cache_enabled=False)
    app = create_app(settings, reranker=OverlapReranker())
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        before = metric("rag_shadow_runs_total", flag="adaptive_rerank", status="ok")
        body = (await ask(client, "who hunts mice")).json()
        assert body["plan"]["router"]["arm"] == "hybrid-rerank"  # users get the baseline (flag off)
        for _ in range(100):
            if metric("rag_shadow_runs_total", flag="adaptive_rerank", status="ok") > before:
                break
            await asyncio.sleep(0.02)
        assert metric("rag_shadow_runs_total", flag="adaptive_rerank", status="ok") == before + 1
        assert metric("rag_shadow_overlap_at_10_count", flag="adaptive_rerank") >= 1


async def test_a_query_without_a_request_id_is_answered_and_not_kept_for_feedback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rag.service.answer import QueryRequest

    app = create_app(service_settings(tmp_path, monkeypatch, cache_enabled=False))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        service = app.state.service
        answer = await service.queries.query(QueryRequest("acme", "who hunts mice"))  # no HTTP request: no id
        assert answer.results and len(service.routing.learner.decisions) == 0
