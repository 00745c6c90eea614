"""POST /admin/tenants/{tenant}/documents with vectors computed elsewhere: stored without embedding, and
refused with 422 naming the field and its limit when they do not fit the collection."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from rag.dense.hashing import HashEmbedder
from rag.types import passage_text
from tests.api.conftest import ACME, ADMIN

pytestmark = pytest.mark.anyio

PATH = "/admin/tenants/acme/documents"


def vector_of(doc: dict[str, Any]) -> list[float]:
    return [float(x) for x in HashEmbedder(64).embed([passage_text(doc["title"], doc["text"])])[0]]


NEW_DOCS = [
    {"id": "ant", "title": "Ant", "text": "Ants build colonies underground and farm aphids."},
    {"id": "eel", "title": "Eel", "text": "Eels are long fish that migrate to the Sargasso sea."},
]


async def test_given_vectors_are_stored_without_embedding(
    client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = {
        "upsert": [
            {**NEW_DOCS[0], "embedding": vector_of(NEW_DOCS[0])},
            {**NEW_DOCS[1], "embeddings": [vector_of(NEW_DOCS[1])]},
        ],
        "embedding_model": "hash:64",
    }
    calls: list[int] = []
    embed = HashEmbedder.embed
    monkeypatch.setattr(
        HashEmbedder, "embed", lambda self, texts, **kw: calls.append(len(texts)) or embed(self, texts, **kw)
    )
    r = await client.post(PATH, json=body, headers=ADMIN)
    monkeypatch.undo()
    assert r.status_code == 200, r.text
    assert calls == []  # the ingest asked the embedder nothing
    job = r.json()["job"]
    assert job["state"] == "succeeded"
    assert (job["report"]["chunks_given"], job["report"]["chunks_embedded"]) == (2, 0)
    found = await client.post("/query", json={"query": "ants farm aphids", "top_k": 3}, headers=ACME)
    assert found.json()["results"][0]["doc_id"] == "ant"


@pytest.mark.parametrize(
    ("change", "field", "limit"),
    [
        ({"embedding": [1.0] * 32}, "body.upsert.1.embedding", 64),
        ({"embedding": [2.0] + [0.0] * 63}, "body.upsert.1.embedding", 0.01),
        ({"embeddings": [[1.0] + [0.0] * 63] * 2}, "body.upsert.1.embeddings", 1),
        ({"embedding_model": "all-MiniLM-L6-v2"}, "body.embedding_model", "hash:64"),
        ({"embedding_model": None}, "body.embedding_model", "hash:64"),
    ],
)
async def test_vectors_that_do_not_fit_are_422_with_field_and_limit(
    client: httpx.AsyncClient, change: dict[str, Any], field: str, limit: object
) -> None:
    doc = {**NEW_DOCS[1], "embedding": vector_of(NEW_DOCS[1])}
    model = change.pop("embedding_model", "hash:64")
    doc.update(change)
    if "embeddings" in change:
        del doc["embedding"]
    body = {"upsert": [NEW_DOCS[0], doc], "embedding_model": model}
    before = (await client.get("/admin/index", headers=ADMIN)).json()["index_version"]
    r = await client.post(PATH, json=body, headers=ADMIN)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "invalid_vectors"
    assert [(f["field"], f["limit"]) for f in error["fields"]] == [(field, limit)]
    assert (await client.get("/admin/index", headers=ADMIN)).json()["index_version"] == before


async def test_both_vector_fields_or_non_numbers_are_schema_errors(client: httpx.AsyncClient) -> None:
    vector = vector_of(NEW_DOCS[0])
    both = {**NEW_DOCS[0], "embedding": vector, "embeddings": [vector]}
    r = await client.post(PATH, json={"upsert": [both], "embedding_model": "hash:64"}, headers=ADMIN)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    wide = {**NEW_DOCS[0], "embedding": [0.0] * 4097}
    r = await client.post(PATH, json={"upsert": [wide], "embedding_model": "hash:64"}, headers=ADMIN)
    assert r.status_code == 422
    assert any(
        f["field"] == "body.upsert.0.embedding" and f["limit"] == 4096 for f in r.json()["error"]["fields"]
    )
