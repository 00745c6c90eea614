"""One table of how a domain error reads (api.errors.ERROR_TABLE): POST /query answers it as the HTTP error
(status, code, message, Retry-After) and POST /query/stream ends with the same code and message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from api.errors import ERROR_TABLE
from rag.acl import AclError
from rag.errors import RagError
from rag.index.given_vectors import VectorError
from rag.resilience.redis import RedisUnavailable
from rag.retrieval.degradation_ladder import RetrievalUnavailable
from rag.retrieval.filters import FilterError
from rag.retrieval.shaping import ShapeError
from rag.retrieval.step_runner import StepFailed
from rag.rollout.config import ConfigError
from rag.routing.budgets import BudgetLevel, BudgetState, OverBudgetError
from rag.service.lifecycle import NotReady
from rag.service.queries import QueryHandler
from rag.types import Step, StepKey
from tests.api.conftest import ACME, ACME_DOCS, ingest, serve, service_settings
from tests.api.test_stream import parse_sse

pytestmark = pytest.mark.anyio

OVER = BudgetState(BudgetLevel.OVER, 1.2, "tenant", 1.2, 1.0, "reject")
ERRORS: list[tuple[BaseException, int, str, str | None]] = [  # error, status, code, Retry-After
    (NotReady("loading the models and the index"), 503, "not_ready", "5"),
    (FilterError("filters.lang", "expected a string"), 422, "invalid_request", None),
    (AclError("acl", "at most 64 entries, got 65", 64), 422, "invalid_request", None),
    (StepFailed(StepKey(Step.RERANK), OSError("model file gone")), 503, "step_failed", "1"),
    (RetrievalUnavailable([], retry_after_s=7), 503, "retrieval_unavailable", "7"),  # the pool's drain time
    (RedisUnavailable("redis unavailable: ConnectionError"), 503, "redis_unavailable", "1"),
    (OverBudgetError("acme", OVER), 429, "budget_exceeded", "60"),
    (ConfigError("budgets.soft_fraction: must be > 0"), 422, "invalid_config", None),
    (
        VectorError("upsert.0.embedding: 32 dimensions", field="upsert.0.embedding", limit=64),
        422,
        "invalid_vectors",
        None,
    ),
    (
        ShapeError("min_score", "this collection has no calibrated confidence scale"),
        422,
        "invalid_request",
        None,
    ),
]


def test_the_table_covers_every_error_a_request_can_raise() -> None:
    assert {type(e) for e, *_ in ERRORS} == set(ERROR_TABLE)
    assert all(issubclass(error, RagError) for error in ERROR_TABLE)


@pytest.mark.parametrize(("error", "status", "code", "retry_after"), ERRORS, ids=lambda v: type(v).__name__)
async def test_http_and_the_stream_read_an_error_alike(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    error: BaseException,
    status: int,
    code: str,
    retry_after: str | None,
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)

        async def failing(*args: object, **kwargs: object) -> Any:
            raise error

        monkeypatch.setattr(QueryHandler, "query", failing)
        r = await client.post("/query", json={"query": "who hunts mice"}, headers=ACME)
        streamed = await client.post("/query/stream", json={"query": "who hunts mice"}, headers=ACME)
    assert r.status_code == status, r.text
    assert r.headers.get("retry-after") == retry_after
    body = r.json()["error"]
    assert body["code"] == code
    event, data = parse_sse(streamed.text)[-1]
    assert streamed.status_code == 200 and event == "error"
    assert (data["code"], data["message"]) == (body["code"], body["message"])
    assert data["request_id"] == streamed.headers["x-request-id"]
    if isinstance(error, StepFailed):
        assert data["step"] == "rerank"  # the stream names the failed step


async def test_any_other_error_is_internal_in_both(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)

        async def failing(*args: object, **kwargs: object) -> Any:
            raise KeyError("a bug")

        monkeypatch.setattr(QueryHandler, "query", failing)
        r = await client.post("/query", json={"query": "who hunts mice"}, headers=ACME)
        streamed = await client.post("/query/stream", json={"query": "who hunts mice"}, headers=ACME)
    assert r.status_code == 500 and r.json()["error"]["code"] == "internal"
    assert parse_sse(streamed.text)[-1][1] | {"request_id": ""} == {
        "code": "internal",
        "message": "KeyError",
        "request_id": "",
    }
