"""Authentication before the body is read, per-route body caps, the metrics token, the docs switch, and
identifiers that end in a newline (issue 12)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.app import create_app
from api.middleware import needs_admin
from api.routes import admin, feedback, health, query, rollout
from api.security import require_admin
from tests.api.conftest import ACME, ADMIN, serve, service_settings

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024


class CountingBody:
    """A request body streamed in ``chunks`` chunks of 64 KiB (no Content-Length), counting how many
    chunks the server pulled: the bytes the app actually received."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.pulled = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        filler = b"a" * CHUNK
        for i in range(self.chunks):
            self.pulled += 1
            yield b'{"x": "' + filler if i == 0 else filler
        yield b'"}'

    @property
    def bytes_received(self) -> int:
        return self.pulled * CHUNK


def bare_client(app: FastAPI) -> httpx.AsyncClient:
    """The app without its lifespan: authentication and body caps need no loaded index."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rag.test")


@pytest.fixture
def app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FastAPI:
    return create_app(service_settings(tmp_path, monkeypatch))


@pytest.mark.parametrize(
    ("headers", "status", "message"),
    [
        ({}, 401, "missing credentials"),
        ({"Authorization": "Bearer not-a-known-key-0123456789"}, 401, "unknown API key"),
        (ACME, 403, "needs the admin token"),
    ],
)
async def test_admin_routes_authenticate_before_reading_the_body(
    app: FastAPI, headers: dict[str, str], status: int, message: str
) -> None:
    body = CountingBody(chunks=64)  # 4 MiB streamed: FastAPI read all of it before require_admin ran
    async with bare_client(app) as client:
        r = await client.put(
            "/admin/rollout", content=body, headers={**headers, "Content-Type": "application/json"}
        )
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == ("unauthorized" if status == 401 else "forbidden")
    assert message in r.json()["error"]["message"]
    assert body.bytes_received == 0
    assert r.headers["connection"] == "close"  # the server stops reading the unread body
    if status == 401:
        assert r.headers["www-authenticate"] == "Bearer"


async def test_jobs_authenticate_before_reading_the_body(app: FastAPI) -> None:
    body = CountingBody(chunks=16)
    async with bare_client(app) as client:
        r = await client.request("GET", "/jobs/" + "0" * 32, content=body)
    assert r.status_code == 401 and body.bytes_received == 0


async def test_unauthenticated_declared_large_body_is_401_not_413(app: FastAPI) -> None:
    async with bare_client(app) as client:
        r = await client.put(
            "/admin/rollout",
            content=CountingBody(chunks=2),
            headers={"Content-Length": str(100 * 1024 * 1024), "Content-Type": "application/json"},
        )
    assert r.status_code == 401  # who you are is checked before what you sent


async def test_authenticated_oversized_rollout_put_is_413(app: FastAPI) -> None:
    settings = app.state.service.settings
    chunks = settings.max_admin_body_bytes // CHUNK + 2
    body = CountingBody(chunks=chunks)
    async with bare_client(app) as client:
        r = await client.put(
            "/admin/rollout", content=body, headers={**ADMIN, "Content-Type": "application/json"}
        )
    assert r.status_code == 413, r.text
    assert r.json()["error"]["fields"][0]["limit"] == settings.max_admin_body_bytes
    assert r.headers["connection"] == "close"
    assert body.bytes_received <= settings.max_admin_body_bytes + CHUNK  # stopped reading at the cap


async def test_only_the_ingest_route_gets_the_large_body_cap(app: FastAPI) -> None:
    settings = app.state.service.settings
    assert settings.max_ingest_body_bytes > settings.max_admin_body_bytes
    size = settings.max_admin_body_bytes + CHUNK  # over the admin cap, under the ingest cap
    async with bare_client(app) as client:
        declared = {**ADMIN, "Content-Length": str(size), "Content-Type": "application/json"}
        fallback = await client.post("/admin/fallback/reset", content=b"{}", headers=declared)
        ingest = await client.post("/admin/tenants/acme/documents", content=b"x", headers=declared)
    assert fallback.status_code == 413
    # not refused for its size (it is refused further on, as a short body)
    assert ingest.status_code != 413


def test_every_admin_route_is_behind_the_middlewares_check() -> None:
    """``require_admin`` stays on the routers as defence in depth; every route that needs it must also be
    covered by the middleware, which authenticates before the body is read."""
    admin_paths = [
        route.path
        for module in (admin, feedback, health, query, rollout)
        for route in module.router.routes
        if isinstance(route, APIRoute)
        and any(dep.call is require_admin for dep in route.dependant.dependencies)
    ]
    assert "/admin/rollout" in admin_paths and "/jobs/{job_id}" in admin_paths
    assert all(needs_admin(path.replace("{", "x").replace("}", "x")) for path in admin_paths)
    assert not needs_admin("/query") and not needs_admin("/administrator") and not needs_admin("/jobsx")


async def test_metrics_need_the_metrics_token_when_one_is_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = "metrics-token-0123456789abcdef"
    app = create_app(service_settings(tmp_path, monkeypatch, metrics_token=token))
    async with bare_client(app) as client:
        missing = await client.get("/metrics")
        wrong = await client.get("/metrics", headers={"Authorization": "Bearer metrics-token-wrong-0123"})
        admin = await client.get("/metrics", headers=ADMIN)  # the admin token is not the metrics token
        right = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert [missing.status_code, wrong.status_code, admin.status_code] == [401, 401, 401]
    assert missing.json()["error"]["code"] == "unauthorized"
    assert "RAG_METRICS_TOKEN" in wrong.json()["error"]["message"]
    assert right.status_code == 200 and "rag_http_requests_total" in right.text


async def test_metrics_are_open_when_no_metrics_token_is_set(app: FastAPI) -> None:
    async with bare_client(app) as client:
        assert (await client.get("/metrics")).status_code == 200


@pytest.mark.parametrize(("enabled", "status"), [(True, 200), (False, 404)])
async def test_docs_and_openapi_are_served_only_when_enabled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, enabled: bool, status: int
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, docs_enabled=enabled))
    async with bare_client(app) as client:
        statuses = [(await client.get(path)).status_code for path in ("/docs", "/redoc", "/openapi.json")]
    assert statuses == [status] * 3


async def raw_asgi_get(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """One GET through the ASGI interface with header bytes no HTTP client would send."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"rag.test"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("rag.test", 80),
    }
    await app(scope, receive, send)
    return sent[0]


async def test_a_request_id_with_a_trailing_newline_is_not_echoed(app: FastAPI) -> None:
    start = await raw_asgi_get(app, "/health", [(b"x-request-id", b"abc\n")])
    echoed = dict(start["headers"])[b"x-request-id"]
    assert b"\n" not in echoed and echoed != b"abc\n"
    start = await raw_asgi_get(app, "/health", [(b"x-request-id", b"abc")])
    assert dict(start["headers"])[b"x-request-id"] == b"abc"


async def test_a_tenant_with_a_trailing_newline_is_refused_by_the_api(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serve(create_app(service_settings(tmp_path, monkeypatch))) as client:
        bad = await client.delete("/admin/tenants/acme%0A/cache", headers=ADMIN)
        good = await client.delete("/admin/tenants/acme/cache", headers=ADMIN)
        query = await client.get("/admin/fallback", params={"tenant": "acme\n"}, headers=ADMIN)
    assert bad.status_code == 422 and query.status_code == 422
    assert good.status_code == 200


@pytest.mark.parametrize("route", ["/query", "/query/stream"])
@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer not-a-known-key-0123456789"}, 401), (ADMIN, 403)],
)
async def test_query_routes_check_who_you_are_before_what_you_sent(
    app: FastAPI, route: str, headers: dict[str, str], status: int
) -> None:
    """An invalid body from a client without a tenant key is refused for the key, never validated: the
    validation errors would tell an unauthenticated client about the API's limits."""
    async with bare_client(app) as client:
        r = await client.post(route, json={"query": "", "top_k": 10_000, "bogus": 1}, headers=headers)
    assert r.status_code == status, r.text
