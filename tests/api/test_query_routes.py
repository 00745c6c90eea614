"""POST /query through the real ASGI app: results, tenant isolation, filters, limits, auth, rate limits."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from api.app import create_app
from tests.api.conftest import ACME, ACME_DOCS, ADMIN, GLOBEX, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


async def test_query_returns_results_and_everything_about_how_they_were_made(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/query", json={"query": "who hunts mice at night", "top_k": 2}, headers=ACME
    )
    assert response.status_code == 200
    body = response.json()
    assert [r["rank"] for r in body["results"]] == [1, 2]
    assert {r["doc_id"] for r in body["results"]} <= {"cat", "owl", "bee"}
    first = body["results"][0]
    plain = {"doc_id", "chunk_id", "rank", "score", "title", "text", "metadata"}
    assert set(first) == plain | {"evidence", "chunks"}
    assert first["chunks"] is None and body["abstained"] is None  # group_by / min_score not asked for
    assert body["route"] == "hybrid"  # no reranker configured
    assert body["plan"]["retrievers"] == ["bm25", "dense"] and body["plan"]["profile"] == "balanced"
    steps = list(body["timings_ms"])  # in the order the steps completed
    assert set(steps) == {"plan", "cache.l1", "embed", "cache.l2", "retrieve.bm25", "retrieve.dense", "fuse"}
    # BM25 runs beside the embedding (the floor, started at once), dense after the cache's L2 lookup
    assert steps[:2] == ["plan", "cache.l1"] and steps[-1] == "fuse"
    assert steps.index("embed") < steps.index("cache.l2") < steps.index("retrieve.dense")
    assert body["index_version"] == "v000002"
    assert body["request_id"] == response.headers["x-request-id"]
    assert body["cache"] == "miss" and body["degraded"] == []
    assert body["cost"]["embedded_texts"] == 1 and body["cost"]["rerank_pairs"] == 0


async def test_tenant_a_never_sees_tenant_b_documents(client: httpx.AsyncClient) -> None:
    # the exact text of globex's secret, asked by acme: acme's own documents only
    secret = "Globex secret plan: hunt mice with quantum turbines at night."
    acme = (await client.post("/query", json={"query": secret, "top_k": 100}, headers=ACME)).json()
    assert acme["results"], "acme has matching documents of its own"
    assert {r["doc_id"] for r in acme["results"]} <= {d["id"] for d in ACME_DOCS}
    assert all("Globex" not in r["text"] and "catalogue" not in r["text"] for r in acme["results"])
    # the same document id in both tenants resolves to each tenant's own document
    globex = (await client.post("/query", json={"query": secret, "top_k": 100}, headers=GLOBEX)).json()
    assert globex["results"][0]["doc_id"] == "plan"
    globex_cat = next(r for r in globex["results"] if r["doc_id"] == "cat")
    assert globex_cat["title"] == "Catalogue"
    acme_cat = (await client.post("/query", json={"query": "cat", "top_k": 100}, headers=ACME)).json()[
        "results"
    ]
    assert [r["title"] for r in acme_cat if r["doc_id"] == "cat"] == ["Cat"]


async def test_filters_on_metadata(client: httpx.AsyncClient) -> None:
    async def ids(filters: dict[str, object]) -> set[str]:
        r = await client.post(
            "/query", json={"query": "mice honey", "top_k": 10, "filters": filters}, headers=ACME
        )
        assert r.status_code == 200, r.text
        return {x["doc_id"] for x in r.json()["results"]}

    assert await ids({"kind": "bird"}) == {"owl"}
    assert await ids({"kind": ["bird", "insect"]}) == {"owl", "bee"}
    assert await ids({"kind": ["bird", "insect"], "legs": 6}) == {"bee"}
    assert await ids({"legs": "6"}) == set()  # a string is not the integer 6
    assert await ids({"kind": "secret"}) == set()  # globex's metadata value: nothing for acme


@pytest.mark.parametrize(
    ("body", "field", "limit"),
    [
        ({"query": "x", "top_k": 0}, "body.top_k", 1),
        ({"query": "x", "top_k": 101}, "body.top_k", 100),
        ({"query": "x" * 2049}, "body.query", 2048),
        ({"query": ""}, "body.query", 1),
        ({"query": "   "}, "body.query", r"\S"),
        ({}, "body.query", None),
        (
            {"query": "x", "profile": "fastest"},
            "body.profile",
            "'latency', 'throughput', 'cost' or 'balanced'",
        ),
        ({"query": "x", "filters": {"k": {"nested": 1}}}, "body.filters.k", None),
        ({"query": "x", "filters": {"bad key": 1}}, "body.filters.bad key.[key]", None),
        ({"query": "x", "filters": {f"f{i}": 1 for i in range(9)}}, "body.filters", 8),
        ({"query": "x", "filters": {"k": list(range(65))}}, "body.filters.k", None),
        ({"query": "x", "filters": {"k": []}}, "body.filters.k", None),
        ({"query": "x", "unknown": 1}, "body.unknown", None),
    ],
)
async def test_bad_query_input_is_a_422_naming_the_field_and_limit(
    client: httpx.AsyncClient, body: dict[str, object], field: str, limit: object
) -> None:
    response = await client.post("/query", json=body, headers=ACME)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    fields = {f["field"]: f for f in error["fields"]}
    matching = [f for name, f in fields.items() if name.startswith(field)]
    assert matching, f"{field} not in {list(fields)}"
    if limit is not None:
        assert any(f["limit"] == limit for f in matching), matching


async def test_malformed_json_is_a_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/query", content=b'{"query": ', headers={**ACME, "content-type": "application/json"}
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


async def test_body_over_the_cap_is_a_413_naming_the_limit(client: httpx.AsyncClient) -> None:
    big = b'{"query": "' + b"x" * (70 * 1024) + b'"}'
    response = await client.post("/query", content=big, headers={**ACME, "content-type": "application/json"})
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "payload_too_large" and error["fields"][0]["limit"] == 64 * 1024

    async def chunked() -> object:  # no Content-Length: counted as it arrives
        for _ in range(80):
            yield b"x" * 1024

    response = await client.post(
        "/query", content=chunked(), headers={**ACME, "content-type": "application/json"}
    )
    assert response.status_code == 413


async def test_profiles_change_the_plan(client: httpx.AsyncClient) -> None:
    body = (await client.post("/query", json={"query": "mice", "profile": "latency"}, headers=ACME)).json()
    assert body["plan"]["profile"] == "latency"
    assert body["plan"]["dims"] == 64 and body["plan"]["candidates"] == 50


async def test_missing_or_unknown_key_is_401_and_wrong_scope_is_403(client: httpx.AsyncClient) -> None:
    q = {"query": "mice"}
    missing = await client.post("/query", json=q)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    assert missing.json()["error"]["code"] == "unauthorized"
    unknown = await client.post("/query", json=q, headers={"Authorization": "Bearer not-a-key-at-all-000"})
    assert unknown.status_code == 401
    basic = await client.post("/query", json=q, headers={"Authorization": "Basic YWxhZGRpbjpvcGVu"})
    assert basic.status_code == 401
    assert (await client.post("/query", json=q, headers=ADMIN)).status_code == 403
    assert (await client.get("/admin/index", headers=ACME)).status_code == 403
    assert (await client.get("/admin/index")).status_code == 401
    assert (
        await client.post("/admin/tenants/acme/documents", json={"delete": ["cat"]}, headers=ACME)
    ).status_code == 403
    assert (await client.get("/jobs/" + "0" * 32, headers=GLOBEX)).status_code == 403


async def test_rate_limit_is_per_tenant_with_retry_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings(tmp_path, monkeypatch, rate_limit_qps=0.5, rate_limit_burst=2)
    async with serve(create_app(settings)) as c:
        await ingest(c, "acme", ACME_DOCS)
        codes = [(await c.post("/query", json={"query": "mice"}, headers=ACME)).status_code for _ in range(3)]
        assert codes == [200, 200, 429]
        limited = await c.post("/query", json={"query": "mice"}, headers=ACME)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        assert "0.5" in limited.json()["error"]["message"]
        # globex has its own bucket
        assert (await c.post("/query", json={"query": "mice"}, headers=GLOBEX)).status_code == 200


async def test_request_id_is_taken_from_the_caller_when_well_formed(client: httpx.AsyncClient) -> None:
    r = await client.post("/query", json={"query": "mice"}, headers={**ACME, "X-Request-ID": "trace-42.a"})
    assert r.headers["x-request-id"] == "trace-42.a" and r.json()["request_id"] == "trace-42.a"
    r = await client.post("/query", json={"query": "mice"}, headers={**ACME, "X-Request-ID": "bad id!"})
    assert r.headers["x-request-id"] != "bad id!" and len(r.headers["x-request-id"]) == 32


async def test_query_that_grows_past_the_limit_under_nfkc_is_a_422(client: httpx.AsyncClient) -> None:
    """The cache key is the query after NFKC normalisation: "\\ufdfa" (one character) becomes 18, so a
    query within the 2,048-character limit could make a 36,000-character key. The limit applies after
    normalisation too, with a 422 that names the field and the limit."""
    grown = "\ufdfa" * 1000
    response = await client.post("/query", json={"query": grown}, headers=ACME)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_request"
    (field,) = [f for f in error["fields"] if f["field"] == "body.query"]
    assert field["limit"] == 2048 and "normali" in field["message"], field
    # within the limit after normalisation: accepted, as before
    ok = await client.post("/query", json={"query": "\ufdfa" * 100 + " mice"}, headers=ACME)
    assert ok.status_code == 200, ok.text


async def test_the_service_answers_with_the_served_versions_embedder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """RAG_EMBEDDER_MODEL changed after the collection was built: queries are still embedded by the model
    of the version served (the cache namespace is built from it), not searched in another space."""
    async with serve(create_app(service_settings(tmp_path, monkeypatch))) as c:
        await ingest(c, "acme", ACME_DOCS)
    app = create_app(service_settings(tmp_path, monkeypatch, embedder_model="hash:32"))
    async with serve(app) as c:
        ready = (await c.get("/ready")).json()
        assert ready["embedder"] == "hash:64"
        body = (await c.post("/query", json={"query": "who hunts mice", "top_k": 2}, headers=ACME)).json()
        assert body["degraded"] == [] and body["results"]
        runtime = app.state.service.lifecycle.runtime
        assert runtime.pipeline.embedder.name == "hash:64"


async def test_a_tuned_collection_serves_its_fusion_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    from rag.bm25.index import BM25Params
    from rag.fusion import FusionChoice, FusionMethod
    from rag.index.tuning import CollectionTuning
    from tests.conftest import make_ingestor

    settings = service_settings(tmp_path, monkeypatch, version_poll_ms=50)
    query = {"query": "who hunts mice at night", "top_k": 2}
    async with serve(create_app(settings)) as client:
        await ingest(client, "acme", ACME_DOCS)
        before = (await client.post("/query", json=query, headers=ACME)).json()
        assert before["plan"]["fusion"] == "rrf"
        assert before["plan"]["fusion_reason"] == "configured default (RAG_FUSION)"
        # `rag tune` publishes a version carrying its choice (here made by hand); the service follows it
        choice = FusionChoice(FusionMethod.MINMAX, {"bm25": 0.6, "dense": 0.4}, 60, "rag tune on a test")
        tuning = CollectionTuning(BM25Params(k1=1.2, b=0.75), choice, "a test", before["index_version"])
        ingestor, store = make_ingestor(settings)
        version = ingestor.retune(tuning.to_json())
        store.close()
        for _ in range(400):
            after = (await client.post("/query", json=query, headers=ACME)).json()
            if after["index_version"] == version:
                break
            await asyncio.sleep(0.05)
        assert after["index_version"] == version and after["cache"] == "miss"  # a new version, new keys
        assert after["plan"]["fusion"] == "minmax" and after["plan"]["weights"] == {"bm25": 0.6, "dense": 0.4}
        assert after["plan"]["fusion_reason"] == "rag tune on a test"
