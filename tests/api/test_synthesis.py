"""LLM answer synthesis is costed and budgeted: tokens and money booked with the tenant, the budget checked
before the call, and a synthesized answer reused only for the same normalised text (L1), never for a
semantic (L2) neighbour."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag import metrics
from rag.service.service import RetrievalService
from rag.testing.fakes import FakeChat
from tests.api.conftest import ACME, ACME_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio

# the rollout config's default prices: 0.15 per 1k prompt tokens, 0.6 per 1k completion tokens
LLM_MONEY = (1000 * 0.15 + 200 * 0.6) / 1000


async def ask(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    r = await client.post("/query", json={"query": query, "top_k": 3, "answer": True}, headers=ACME)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def with_fake_llm(app: Any) -> tuple[RetrievalService, FakeChat]:
    service: RetrievalService = app.state.service
    chat = FakeChat(prompt_tokens=1000, completion_tokens=200)
    service.synthesis.llm = chat
    return service, chat


async def test_synthesis_tokens_and_money_are_booked_with_the_tenant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, llm_url="http://llm.invalid/v1"))
    service, chat = with_fake_llm(app)
    booked = metrics.COST_MONEY.labels("synthesize", "acme")
    before = booked._value.get()
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        spent_before = service.routing.budgets.window.spent("acme")
        r = await ask(client, "who hunts mice")
        assert chat.calls == ["who hunts mice"]
        assert r["answer"]["reused"] is False
        assert r["answer"]["text"] == "About who hunts mice [1]"
        assert (r["cost"]["prompt_tokens"], r["cost"]["completion_tokens"]) == (1000, 200)
        assert r["cost"]["llm_money"] == pytest.approx(LLM_MONEY)
        assert r["cost"]["money"] >= LLM_MONEY  # the answer's total holds retrieval and synthesis
        spent = service.routing.budgets.window.spent("acme") - spent_before
        assert spent == pytest.approx(r["cost"]["money"], rel=1e-6)  # booked against the budget
        assert booked._value.get() - before == pytest.approx(LLM_MONEY)


async def test_an_l1_hit_with_answer_true_does_not_call_the_llm_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, llm_url="http://llm.invalid/v1"))
    service, chat = with_fake_llm(app)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        first = await ask(client, "Which animal hunts mice at night?")
        spent = service.routing.budgets.window.spent("acme")
        again = await ask(client, "which animal hunts  mice at night")  # the same normalised text
        assert again["cache"] == "l1"
        assert chat.calls == ["Which animal hunts mice at night?"], "the LLM was called again on an L1 hit"
        assert again["answer"] == {**first["answer"], "reused": True}
        assert again["cost"]["prompt_tokens"] == 0 and again["cost"]["completion_tokens"] == 0
        assert service.routing.budgets.window.spent("acme") == pytest.approx(spent)  # nothing new spent


async def test_an_l2_hit_serves_its_passages_and_synthesizes_afresh(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(
        service_settings(tmp_path, monkeypatch, llm_url="http://llm.invalid/v1", cache_threshold=0.8)
    )
    _, chat = with_fake_llm(app)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        first = await ask(client, "Which animal hunts mice at night?")
        reworded = await ask(client, "at night, which animal hunts mice?")
        assert reworded["cache"] == "l2" and reworded["results"] == first["results"]
        assert chat.calls == ["Which animal hunts mice at night?", "at night, which animal hunts mice?"]
        assert reworded["answer"]["text"] == "About at night, which animal hunts mice? [1]"
        assert reworded["cost"]["prompt_tokens"] == 1000
        # and that text's own repeat is an L1 hit of its own answer
        again = await ask(client, "At night, which animal hunts mice")
        assert again["answer"] == {**reworded["answer"], "reused": True} and len(chat.calls) == 2


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "per_hour",
    [0.0, 0.01],  # over the budget already; under it, but the call could cost more than what is left
    ids=["over", "call_would_exceed"],
)
async def test_over_budget_the_llm_is_not_called(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_hour: float
) -> None:
    config = write_config(tmp_path / "rollout.toml", f"[budgets.tenants.acme]\nper_hour = {per_hour}\n")
    settings = service_settings(tmp_path, monkeypatch, llm_url="http://llm.invalid/v1", rollout_config=config)
    app = create_app(settings)
    _, chat = with_fake_llm(app)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        r = await ask(client, "who hunts mice")
        assert chat.calls == [], "the LLM was called past the tenant's budget"
        assert r["answer"] is None and r["results"], "the passages are still served"
        budget = [d for d in r["degraded"] if d["step"] == "synthesize"]
        assert [d["code"] for d in budget] == ["budget"]
        assert "budget" in budget[0]["reason"]
        assert r["cost"]["prompt_tokens"] == 0
