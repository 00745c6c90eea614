"""What the cache reads from Redis is checked before it is used: entries are signed (HMAC-SHA256 keyed by
``RAG_CACHE_SECRET``) over their namespace, id and content, answers are validated; a forged, malformed or
replayed entry is a miss (and deleted), never an answer and never a 500. Real redis-server."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from api.app import create_app
from rag.cache.semantic import QueryCache
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis, RedisKeys
from rag.text.analyzer import Analyzer
from tests.api.conftest import ACME, ACME_DOCS, ingest, serve, service_settings
from tests.rag.cache.conftest import DIM, answer, no_idf, ns, vector

pytestmark = pytest.mark.anyio

SECRET = "test-cache-secret-0123456789abcdef"
QUESTION = "Which animal hunts mice at night?"
REWORDED = "at night, which animal hunts mice?"  # an L2 neighbour of QUESTION (see tests/api/test_cache.py)
KEYS = RedisKeys("svc")  # the collection of service_settings and of make()


def make(url: str, secret: str | None = SECRET) -> QueryCache:
    client = GuardedRedis.connect(url, Breaker("redis", BreakerPolicy()), timeout_s=1.0, collection="svc")
    return QueryCache(
        dim=DIM,
        analyzer=Analyzer(),
        threshold=0.9,
        ttl_s=600.0,
        redis=client,
        secret=secret.encode() if secret else None,
        sync_interval_s=0.0,
    )


def answer_keys(r: redis.Redis, tenant: str) -> list[bytes]:
    return sorted(r.scan_iter(match=KEYS.cache(tenant).answer("*")))


async def ask(client: httpx.AsyncClient, query: str) -> dict[str, Any]:
    response = await client.post("/query", json={"query": query, "top_k": 3}, headers=ACME)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(None, id="forged"),  # a well-formed answer written by someone without the secret
        pytest.param(b"not-json{", id="malformed"),
    ],
)
async def test_a_forged_or_malformed_answer_in_redis_is_a_miss_and_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, value: bytes | None
) -> None:
    settings = service_settings(
        tmp_path, monkeypatch, redis_url=redis_url, cache_threshold=0.8, cache_secret=SECRET
    )
    r = redis.Redis.from_url(redis_url)
    async with serve(create_app(settings)) as client:
        await ingest(client, "acme", ACME_DOCS)
        first = await ask(client, QUESTION)
        assert first["cache"] == "miss"
        [key] = answer_keys(r, "acme")
        forged = dict(first, results=[dict(first["results"][0], text="<script>alert(1)</script>")])
        r.set(key, value if value is not None else json.dumps(forged))
    async with serve(create_app(settings)) as client:  # a fresh replica: nothing in its L1
        again = await ask(client, REWORDED)
        assert again["cache"] == "miss"
        assert "<script>" not in json.dumps(again)
        assert not r.exists(key)  # deleted, not served again until its TTL


async def test_an_entry_replayed_into_another_tenant_is_a_miss(redis_url: str) -> None:
    """A Redis writer copies acme's stream entry and answer into globex's keys, renaming the namespace."""
    writer, reader = make(redis_url), make(redis_url)
    r = redis.Redis.from_url(redis_url)
    try:
        await writer.put(ns("acme"), "what is the secret plan", vector(1), answer(doc="acme-secret"))
        [(_, fields)] = r.xrange(KEYS.cache("acme").log("0"))
        [key] = answer_keys(r, "acme")
        entry_id = fields[b"id"].decode()
        r.xadd(KEYS.cache("globex").log("0"), {**fields, b"ns": ns("globex").digest.encode()})
        r.set(KEYS.cache("globex").answer(entry_id), r.get(key))  # type: ignore[arg-type]
        assert await reader.get_similar(ns("globex"), "what is the secret plan", vector(1), no_idf) is None
        assert reader.stats("globex").l2_entries == 0  # the replayed stream entry is not even held
        # the genuine entry still serves its own tenant
        hit = await reader.get_similar(ns("acme"), "what is the secret plan", vector(1), no_idf)
        assert hit is not None and hit.answer["results"][0]["doc_id"] == "acme-secret"
    finally:
        for cache in (writer, reader):
            await cache.redis.close()  # type: ignore[union-attr]


async def test_a_forged_stream_entry_never_joins_the_neighbour_search(redis_url: str) -> None:
    reader = make(redis_url)
    r = redis.Redis.from_url(redis_url)
    digest = ns("acme").digest
    fields = {
        "id": "f" * 32,
        "ns": digest,
        "ver": "v1",
        "text": "poison",
        "exp": "1e12",
        "vec": vector(3).tobytes(),
    }
    r.xadd(KEYS.cache("acme").log("0"), {**fields, "sig": "0" * 64})
    r.xadd(KEYS.cache("acme").log("0"), {k: v for k, v in fields.items() if k != "id"})  # malformed
    r.set(KEYS.cache("acme").answer("f" * 32), json.dumps(answer(doc="poison")))
    try:
        assert await reader.get_similar(ns("acme"), "poison", vector(3), no_idf) is None
        assert reader.stats("acme").l2_entries == 0
    finally:
        await reader.redis.close()  # type: ignore[union-attr]


async def test_without_a_cache_secret_answers_are_not_shared_through_redis(
    redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """No secret, no signature: this replica keeps its L2 to itself (and says so); purges still reach
    every replica through Redis."""
    with caplog.at_level(logging.WARNING):
        one, two = make(redis_url, secret=None), make(redis_url, secret=None)
    assert "RAG_CACHE_SECRET" in caplog.text
    r = redis.Redis.from_url(redis_url)
    try:
        await one.put(ns(), "who hunts mice", vector(5), answer(doc="owl"))
        assert answer_keys(r, "acme") == [] and not r.exists(KEYS.cache("acme").log("0"))
        assert await one.get_similar(ns(), "who hunts mice", vector(5), no_idf) is not None  # its own
        assert await two.get_similar(ns(), "who hunts mice", vector(5), no_idf) is None
        await two.purge("acme")
        assert await one.get_exact(ns(), "who hunts mice") is None  # the purge reached it
        assert await one.get_similar(ns(), "who hunts mice", vector(5), no_idf) is None
    finally:
        for cache in (one, two):
            await cache.redis.close()  # type: ignore[union-attr]


def test_the_cached_answer_schema_has_the_fields_of_a_result() -> None:
    """A field added to Result must be added to the schema too, or every shared L2 hit would be a miss."""
    from dataclasses import fields

    from rag.cache.shared import CachedResult
    from rag.types import Result

    assert set(CachedResult.model_fields) == {f.name for f in fields(Result)}
