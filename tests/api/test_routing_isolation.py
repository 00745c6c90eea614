"""Tenants through the routing layer: the plan reveals nothing of another tenant's vocabulary, pending
feedback decisions are per (tenant, request id), /feedback has a rate limit of its own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.testing.fakes import OverlapReranker
from tests.api.conftest import ACME, ACME_DOCS, GLOBEX, GLOBEX_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio

SLACK = {
    "deadline_ms": 10_000
}  # a loaded machine must not turn a step into a degradation: responses compared

# "turbines" occurs in globex's documents only; "qwzrtplk" nowhere; both 8 letters, lowercase, no digits
ONLY_IN_GLOBEX = "turbines"
NONSENSE = "qwzrtplk"


async def ask(
    client: httpx.AsyncClient, query: str, headers: dict[str, str], **extra_headers: str
) -> httpx.Response:
    response = await client.post(
        "/query", json={"query": query, "top_k": 3}, headers={**headers, **extra_headers}
    )
    assert response.status_code == 200, response.text
    return response


def observable(body: dict[str, Any]) -> dict[str, Any]:
    """What a response tells about the index, less what depends only on the query text and the caller's
    own documents (the results: the dense side ranks them by the text's embedding) and on timing."""
    cost = {k: v for k, v in body["cost"].items() if k not in ("cpu_ms", "money")}  # CPU-time based
    # the caller's own spend, which its previous query just raised
    budget = {k: v for k, v in body["plan"]["budget"].items() if k not in ("spent_last_hour", "pressure")}
    return {
        "plan": {**body["plan"], "budget": budget},
        "route": body["route"],
        "cache": body["cache"],
        "degraded": body["degraded"],
        "cost": cost,
        "index_version": body["index_version"],
        "results": len(body["results"]),
    }


async def test_plan_does_not_reveal_whether_a_word_occurs_in_another_tenants_documents(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(
        service_settings(tmp_path, monkeypatch, cache_enabled=False, **SLACK), reranker=OverlapReranker()
    )
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        # globex asks first: what the router learnt of the text for globex must not be served to acme
        own = (await ask(client, ONLY_IN_GLOBEX, GLOBEX)).json()
        assert own["plan"]["features"]["unknown_terms"] == 0  # globex sees its own vocabulary
        word = (await ask(client, ONLY_IN_GLOBEX, ACME)).json()
        nonsense = (await ask(client, NONSENSE, ACME)).json()
        assert observable(word) == observable(nonsense)
        assert word["plan"]["features"]["unknown_terms"] == 1  # for acme the word is as unknown as nonsense


async def test_feedback_decisions_are_keyed_by_tenant_and_request_id(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """globex sending the same X-Request-ID as acme must not erase acme's pending decision."""
    app = create_app(service_settings(tmp_path, monkeypatch, cache_enabled=False, **SLACK))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        acme = (await ask(client, "who hunts mice", ACME, **{"X-Request-ID": "same-id"})).json()
        globex = (await ask(client, "who hunts mice", GLOBEX, **{"X-Request-ID": "same-id"})).json()
        assert acme["request_id"] == globex["request_id"] == "same-id"
        for headers in (ACME, GLOBEX):
            r = await client.post("/feedback", json={"request_id": "same-id", "rating": 5}, headers=headers)
            assert r.status_code == 200, r.text
            again = await client.post(
                "/feedback", json={"request_id": "same-id", "rating": 5}, headers=headers
            )
            assert again.status_code == 404  # each tenant's decision is taken once


async def test_feedback_has_a_rate_limit_of_its_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """/feedback is limited per tenant (429, Retry-After, the common error shape) in a bucket apart from
    the queries': rating answers does not spend the tenant's query budget."""
    settings = service_settings(
        tmp_path, monkeypatch, cache_enabled=False, rate_limit_qps=0.01, rate_limit_burst=2, **SLACK
    )
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ask(client, "who hunts mice", ACME)  # one of the two query tokens
        for i in range(2):
            r = await client.post("/feedback", json={"request_id": f"unknown-{i}", "rating": 3}, headers=ACME)
            assert r.status_code == 404, r.text
        limited = await client.post("/feedback", json={"request_id": "unknown-3", "rating": 3}, headers=ACME)
        assert limited.status_code == 429, limited.text
        assert int(limited.headers["Retry-After"]) >= 1
        body = limited.json()
        assert body["error"]["code"] == "rate_limited" and "feedback" in body["error"]["message"]
        assert body["request_id"] == limited.headers["x-request-id"]
        other = await client.post("/feedback", json={"request_id": "unknown-4", "rating": 3}, headers=GLOBEX)
        assert other.status_code == 404  # globex has its own bucket
        await ask(client, "who hunts mice", ACME)  # the second query token is still there


async def test_plan_does_not_show_the_deployments_spend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a global budget, acme's plan shows no deployment-wide numbers: globex's traffic (what it
    spends) cannot be read from acme's responses while the budget level stays the same."""
    config = tmp_path / "rollout.toml"
    config.write_text("[budgets]\nglobal_per_hour = 1000.0\n")
    settings = service_settings(tmp_path, monkeypatch, cache_enabled=False, rollout_config=config, **SLACK)
    app = create_app(settings, reranker=OverlapReranker())
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        before = (await ask(client, "who hunts mice", ACME)).json()["plan"]["budget"]
        for i in range(5):
            await ask(client, f"turbines {i}", GLOBEX)
        after = (await ask(client, "who hunts mice", ACME)).json()["plan"]["budget"]
        assert after == before and after["scope"] == "global" and after["level"] == "ok"
        assert after["spent_last_hour"] is None and after["pressure"] is None
