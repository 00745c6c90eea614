"""Admin ingestion over HTTP (sync and as jobs), the index summary, health, readiness, metrics, logs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.logs import JsonFormatter
from rag.testing.fakes import FailingEmbedder
from tests.api.conftest import (
    ACME,
    ACME_DOCS,
    ACME_KEY,
    ADMIN,
    ADMIN_TOKEN,
    GLOBEX,
    ingest,
    serve,
    service_settings,
    wait_job,
)

pytestmark = pytest.mark.anyio


async def test_upsert_is_idempotent_and_reports_the_version(client: httpx.AsyncClient) -> None:
    again = (await ingest(client, "acme", ACME_DOCS)).json()
    assert again["job"]["state"] == "succeeded"
    assert again["job"]["index_version"] == "v000002"  # nothing changed: no new version
    assert again["job"]["report"]["docs_unchanged"] == 3
    edited = [{**ACME_DOCS[0], "text": "Cats sleep most of the day."}]
    report = (await ingest(client, "acme", edited)).json()["job"]["report"]
    assert report["version"] == "v000003" and report["docs_updated"] == 1 and report["chunks_embedded"] == 1
    hits = (await client.post("/query", json={"query": "sleep", "top_k": 1}, headers=ACME)).json()["results"]
    assert hits[0]["doc_id"] == "cat" and "sleep" in hits[0]["text"]


async def test_delete_removes_only_the_tenants_own_document(client: httpx.AsyncClient) -> None:
    r = await client.post("/admin/tenants/acme/documents", json={"delete": ["cat", "nope"]}, headers=ADMIN)
    assert r.status_code == 200
    report = r.json()["job"]["report"]
    assert report["docs_deleted"] == 1 and report["docs_missing_for_delete"] == 1
    acme = (await client.post("/query", json={"query": "cat catalogue", "top_k": 10}, headers=ACME)).json()
    assert "cat" not in {x["doc_id"] for x in acme["results"]}
    globex = (await client.post("/query", json={"query": "catalogue", "top_k": 10}, headers=GLOBEX)).json()
    assert "cat" in {x["doc_id"] for x in globex["results"]}  # globex's "cat" is untouched
    index = (await client.get("/admin/index", headers=ADMIN)).json()
    assert index["documents_per_tenant"] == {"acme": 2, "globex": 2}


async def test_large_batches_run_as_jobs_with_progress(client: httpx.AsyncClient) -> None:
    docs = [{"id": f"d{i}", "text": f"document number {i} about mice and turbines"} for i in range(120)]
    r = await client.post("/admin/tenants/acme/documents", json={"upsert": docs}, headers=ADMIN)
    assert r.status_code == 202
    assert r.headers["location"] == r.json()["status_url"]
    job = await wait_job(client, r.json()["job"]["id"])
    assert job["state"] == "succeeded" and job["index_version"] == "v000003"
    assert job["progress"] == {"chunks_done": 120, "chunks_total": 120}
    assert job["documents"] == 120 and job["finished_at"] >= job["started_at"]
    index = (await client.get("/admin/index", headers=ADMIN)).json()
    assert index["index_version"] == "v000003" and index["documents_per_tenant"]["acme"] == 123
    # background=true makes even a small batch a job
    r = await client.post(
        "/admin/tenants/acme/documents", json={"delete": ["d0"]}, headers=ADMIN, params={"background": "true"}
    )
    assert r.status_code == 202
    assert (await wait_job(client, r.json()["job"]["id"]))["index_version"] == "v000004"


async def test_a_failed_job_leaves_the_previous_version_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=FailingEmbedder(64))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        docs = [{"id": f"d{i}", "text": f"doc {i}"} for i in range(299)] + [{"id": "boom", "text": "EXPLODE"}]
        r = await client.post("/admin/tenants/acme/documents", json={"upsert": docs}, headers=ADMIN)
        job = await wait_job(client, r.json()["job"]["id"])
        assert job["state"] == "failed" and "EXPLODE" in job["error"] and job["index_version"] is None
        index = (await client.get("/admin/index", headers=ADMIN)).json()
        assert index["index_version"] == "v000001" and index["documents"] == 3
        r = await client.post("/query", json={"query": "doc 7"}, headers=ACME)
        assert r.status_code == 200 and r.json()["index_version"] == "v000001"
        assert not {x["doc_id"] for x in r.json()["results"]} & {"d7", "boom"}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/admin/tenants/Bad Tenant/documents", {"delete": ["x"]}, "path.tenant"),
        ("/admin/tenants/acme/documents", {}, "body"),
        ("/admin/tenants/acme/documents", {"upsert": [{"id": "a", "text": ""}]}, "body.upsert.0.text"),
        ("/admin/tenants/acme/documents", {"upsert": [{"id": "a\u001fb", "text": "t"}]}, "body.upsert.0.id"),
        ("/admin/tenants/acme/documents", {"upsert": [{"id": "a", "text": "t"}], "delete": ["a"]}, "body"),
        ("/admin/tenants/acme/documents", {"delete": ["x"] * 10_001}, "body.delete"),
        (
            "/admin/tenants/acme/documents",
            {"upsert": [{"id": "a", "text": "t", "metadata": {"m": {"deep": 1}}}]},
            "body.upsert.0.metadata.m",
        ),
    ],
)
async def test_bad_ingest_input_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, path: str, body: dict[str, object], field: str
) -> None:
    r = await client.post(path, json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    assert any(f["field"].startswith(field) for f in r.json()["error"]["fields"]), r.json()
    assert (await client.get("/admin/index", headers=ADMIN)).json()["index_version"] == "v000002"


async def test_unknown_job_is_404(client: httpx.AsyncClient) -> None:
    r = await client.get("/jobs/" + "a" * 32, headers=ADMIN)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    assert (await client.get("/jobs/not-a-job-id", headers=ADMIN)).status_code == 422


async def test_health_ready_and_metrics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 503 and ready.json()["phase"] == "no_index"
        query = await client.post("/query", json={"query": "mice"}, headers=ACME)
        assert query.status_code == 503 and query.json()["error"]["code"] == "not_ready"
        await ingest(client, "acme", ACME_DOCS)
        ready = await client.get("/ready")
        assert ready.status_code == 200 and ready.json()["index_version"] == "v000001"
        await client.post("/query", json={"query": "mice"}, headers=ACME)
        text = (await client.get("/metrics")).text
        assert 'rag_http_requests_total{method="POST",route="/query",status="200"}' in text
        assert 'rag_step_duration_seconds_count{step="retrieve.bm25"}' in text
        assert "rag_ready 1.0" in text


async def test_logs_are_json_with_the_request_id_and_never_a_key(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    await client.post("/query", json={"query": "mice"}, headers={**ACME, "X-Request-ID": "req-1"})
    await client.post(
        "/query", json={"query": "mice"}, headers={"Authorization": "Bearer wrong-key-000000000"}
    )
    await client.get("/admin/index", headers=ADMIN)
    lines = [JsonFormatter().format(r) for r in caplog.records]
    request_lines = [json.loads(line) for line in lines if json.loads(line)["msg"] == "request"]
    first = next(x for x in request_lines if x.get("request_id") == "req-1")
    assert first["status"] == 200 and first["path"] == "/query" and first["tenant"] == "acme"
    assert {x["status"] for x in request_lines} >= {200, 401}
    everything = "\n".join(lines)
    for secret in (ACME_KEY, ADMIN_TOKEN, "wrong-key-000000000"):
        assert secret not in everything


async def test_breakers_can_be_read_and_forced_and_bad_input_is_refused(client: httpx.AsyncClient) -> None:
    states = (await client.get("/admin/breakers", headers=ADMIN)).json()
    assert {b["name"] for b in states} >= {"embedder", "qdrant", "reranker", "llm"}
    assert all(b["state"] == "closed" for b in states)
    r = await client.post("/admin/breakers/qdrant", json={"state": "open"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "open"
    body = (await client.post("/query", json={"query": "mice"}, headers=ACME)).json()
    assert ("retrieve.dense", "breaker_open") in {(d["step"], d["code"]) for d in body["degraded"]}
    r = await client.post("/admin/breakers/qdrant", json={"state": "closed"}, headers=ADMIN)
    assert r.json()["state"] == "closed"
    # unknown breaker → 404 naming the known ones; a state outside the allowed ones → 422 on the field
    r = await client.post("/admin/breakers/nosuch", json={"state": "open"}, headers=ADMIN)
    assert r.status_code == 404 and "qdrant" in r.json()["error"]["message"]
    r = await client.post("/admin/breakers/qdrant", json={"state": "half-open"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["fields"][0]["field"] == "body.state"
    r = await client.post("/admin/breakers/qdrant", json={"state": "open"}, headers=ACME)
    assert r.status_code == 403
    states = (await client.get("/admin/breakers", headers=ADMIN)).json()
    assert next(b for b in states if b["name"] == "qdrant")["state"] == "closed"  # the 403 changed nothing
