"""The real ASGI app over httpx, with the hash embedder, a temp data folder and two tenants."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from api.app import create_app
from rag.config import Settings, load_settings
from rag.testing.servers import free_port, wait_for_port

ACME_KEY = "acme-key-0123456789abcdef"
GLOBEX_KEY = "globex-key-0123456789abcdef"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
ACME = {"Authorization": f"Bearer {ACME_KEY}"}
GLOBEX = {"Authorization": f"Bearer {GLOBEX_KEY}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

ACME_DOCS = [
    {
        "id": "cat",
        "title": "Cat",
        "text": "Cats are small carnivorous mammals that purr and hunt mice.",
        "metadata": {"kind": "mammal", "legs": 4},
    },
    {
        "id": "owl",
        "title": "Owl",
        "text": "Owls are nocturnal birds of prey that hunt mice at night.",
        "metadata": {"kind": "bird", "legs": 2},
    },
    {
        "id": "bee",
        "title": "Bee",
        "text": "Bees are flying insects that pollinate flowers and make honey.",
        "metadata": {"kind": "insect", "legs": 6},
    },
]
# globex has a document with the same id as acme's, and a secret only globex may see
GLOBEX_DOCS = [
    {
        "id": "cat",
        "title": "Catalogue",
        "text": "The globex product catalogue lists turbines and mice traps.",
        "metadata": {"kind": "catalogue"},
    },
    {
        "id": "plan",
        "title": "Plan",
        "text": "Globex secret plan: hunt mice with quantum turbines at night.",
        "metadata": {"kind": "secret"},
    },
]


def service_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Settings:
    for key in [k for k in __import__("os").environ if k.startswith("RAG_")]:
        monkeypatch.delenv(key)
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "embedder_model": "hash:64",
        "collection": "svc",
        "api_keys": f"acme:{ACME_KEY},globex:{GLOBEX_KEY}",
        "admin_token": ADMIN_TOKEN,
        "rate_limit_qps": 1000.0,
        "rate_limit_burst": 1000,
        "ingest_sync_max_docs": 50,
        "log_json": True,
        "router_rerank_gate": 0.0,  # rerank every query to the fixed depth (the gate has tests of its own)
    }
    values.update(overrides)
    return load_settings(**values)


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan running, behind an httpx client (no network)."""
    async with app.router.lifespan_context(app):
        await app.state.service.lifecycle.wait_loaded()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://rag.test") as client:
            yield client


async def ingest(
    client: httpx.AsyncClient, tenant: str, docs: list[dict[str, Any]], **params: Any
) -> httpx.Response:
    response = await client.post(
        f"/admin/tenants/{tenant}/documents", json={"upsert": docs}, headers=ADMIN, params=params
    )
    assert response.status_code in (200, 202), response.text
    return response


async def wait_job(client: httpx.AsyncClient, job_id: str, timeout_s: float = 60) -> dict[str, Any]:
    for _ in range(int(timeout_s / 0.05)):
        job = (await client.get(f"/jobs/{job_id}", headers=ADMIN)).json()
        if job["state"] in ("succeeded", "failed", "reload_failed"):
            return job  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} did not finish")


@contextmanager
def live_server(app: FastAPI, tenants: dict[str, list[dict[str, Any]]]) -> Iterator[str]:
    """The app behind a real uvicorn server in a thread (for real sockets: disconnects, schemathesis),
    loaded and holding ``tenants``' documents. Yields the base URL."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while not (hasattr(app.state, "service") and app.state.service.lifecycle.phase.value != "loading"):
            if time.monotonic() > deadline:
                raise TimeoutError("the app did not finish loading")
            time.sleep(0.05)
        wait_for_port(port)
        for tenant, docs in tenants.items():
            r = httpx.post(
                f"{base}/admin/tenants/{tenant}/documents", json={"upsert": docs}, headers=ADMIN, timeout=30
            )
            assert r.status_code == 200, r.text
        yield base
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
async def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[httpx.AsyncClient]:
    """A ready service holding ACME_DOCS for acme and GLOBEX_DOCS for globex."""
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as c:
        await ingest(c, "acme", ACME_DOCS)
        await ingest(c, "globex", GLOBEX_DOCS)
        yield c
