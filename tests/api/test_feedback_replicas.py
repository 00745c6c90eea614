"""POST /feedback reaches any replica: two services (own data dirs) on one real redis-server; a query
answered by replica 1 is rated through replica 2 (200), once, only by its tenant, and the learnt state is
the deployment's (a replica started afterwards has it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from rag.testing.fakes import OverlapReranker
from tests.api.conftest import ACME, ACME_DOCS, GLOBEX, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


async def test_feedback_sent_to_replica_2_for_an_answer_of_replica_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    def replica(name: str):  # type: ignore[no-untyped-def]
        settings = service_settings(
            tmp_path / name, monkeypatch, cache_enabled=False, redis_url=redis_url, redis_timeout_ms=500
        )
        return create_app(settings, reranker=OverlapReranker())

    one, two = replica("r1"), replica("r2")
    async with serve(one) as c1, serve(two) as c2:
        for client in (c1, c2):
            await ingest(client, "acme", ACME_DOCS)
        answered = await c1.post("/query", json={"query": "who hunts mice", "top_k": 3}, headers=ACME)
        assert answered.status_code == 200, answered.text
        rid, arm = answered.json()["request_id"], answered.json()["plan"]["router"]["arm"]
        top = answered.json()["results"][0]["doc_id"]
        assert len(one.state.service.routing.learner.decisions) == 0  # it is in Redis, not replica 1

        other_tenant = await c2.post("/feedback", json={"request_id": rid, "rating": 5}, headers=GLOBEX)
        assert other_tenant.status_code == 404
        rated = await c2.post("/feedback", json={"request_id": rid, "clicked": [top]}, headers=ACME)
        assert rated.status_code == 200, rated.text
        assert rated.json()["arm"] == arm and rated.json()["quality"] == 1.0
        assert two.state.service.routing.learner.bandit.counts[arm] == 1
        for client in (c1, c2):
            again = await client.post("/feedback", json={"request_id": rid, "rating": 5}, headers=ACME)
            assert again.status_code == 404 and again.json()["error"]["code"] == "unknown_request"
    # both stopped: replica 2 merged its update at shutdown; a replica started now has it
    three = replica("r3")
    async with serve(three):
        learner = three.state.service.routing.learner
        assert learner.bandit.counts[arm] == 1 and learner.bandit.tenant_counts("acme")[arm] == 1
