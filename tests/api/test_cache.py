"""The query cache through the service: L1 exact repeats, L2 semantic neighbours with the guard, no stale
hits after a new index version, per-tenant purge, single-flight, and the Redis-shared L2 (a real
redis-server) including Redis going away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.dense.hashing import HashEmbedder
from rag.testing.fakes import OverlapReranker
from tests.api.conftest import ACME, ACME_DOCS, ADMIN, GLOBEX, GLOBEX_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


async def ask(client: httpx.AsyncClient, query: str, headers: dict[str, str] = ACME) -> dict:  # type: ignore[type-arg]
    r = await client.post("/query", json={"query": query, "top_k": 3}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


async def test_l1_serves_an_exact_repeat_and_l2_a_reworded_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, cache_threshold=0.8))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        first = await ask(client, "Which animal hunts mice at night?")
        assert first["cache"] == "miss"
        again = await ask(client, "which animal hunts  mice at night")  # case, spaces, no '?'
        assert again["cache"] == "l1" and again["results"] == first["results"]
        assert "embed" not in again["timings_ms"]  # an L1 hit costs no model call
        reordered = await ask(client, "at night, which animal hunts mice?")  # same stems, other order
        assert reordered["cache"] == "l2" and reordered["results"] == first["results"]
        # close in embedding space but negated, or with a number: never served from the cache
        assert (await ask(client, "Which animal does not hunt mice at night?"))["cache"] == "miss"
        assert (await ask(client, "Which 2 animals hunt mice at night?"))["cache"] == "miss"
        # another tenant asking the same words gets its own answer
        assert (await ask(client, "Which animal hunts mice at night?", GLOBEX))["cache"] == "miss"


async def test_a_new_index_version_never_serves_stale_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        before = await ask(client, "who makes honey")
        assert (await ask(client, "who makes honey"))["cache"] == "l1"
        new_doc = {"id": "wasp", "title": "Wasp", "text": "Wasps make no honey but they make paper nests."}
        await ingest(client, "acme", [new_doc])
        after = await ask(client, "who makes honey")
        assert after["cache"] == "miss" and after["index_version"] != before["index_version"]
        assert "wasp" in {r["doc_id"] for r in after["results"]}
        # the cache keeps nothing of the version no longer served
        assert app.state.service.lifecycle.cache.stats().spaces == 1


async def test_purge_forgets_one_tenant_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        for headers in (ACME, GLOBEX):
            await ask(client, "mice", headers)
        r = await client.delete("/admin/tenants/acme/cache", headers=ADMIN)
        assert r.status_code == 200 and r.json() == {"tenant": "acme", "purged": True}
        assert (await ask(client, "mice", ACME))["cache"] == "miss"
        assert (await ask(client, "mice", GLOBEX))["cache"] == "l1"
        assert (await client.delete("/admin/tenants/acme/cache", headers=ACME)).status_code == 403


async def test_identical_concurrent_misses_run_the_pipeline_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reranker = OverlapReranker(delay_s=0.2)  # keeps the first query in flight while the others arrive
    app = create_app(
        service_settings(tmp_path, monkeypatch, deadline_ms=5000, micro_batching=False), reranker=reranker
    )
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        answers = await asyncio.gather(*(ask(client, "who hunts mice") for _ in range(10)))
    assert len(reranker.calls) == 1  # one pipeline run for ten requests
    assert sorted(a["cache"] for a in answers) == ["coalesced"] * 9 + ["miss"]
    assert len({str(a["results"]) for a in answers}) == 1


async def test_l2_is_shared_through_redis(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """Two services (two replicas' worth of state) on one Redis and one index: an answer cached through
    one is found through the other, and a purge through either reaches both."""
    settings = service_settings(
        tmp_path, monkeypatch, redis_url=redis_url, cache_threshold=0.8, cache_secret="s" * 32
    )
    one, two = create_app(settings), create_app(settings, embedder=HashEmbedder(64))
    async with serve(one) as c1:
        await ingest(c1, "acme", ACME_DOCS)
        first = await ask(c1, "Which animal hunts mice at night?")
        assert first["cache"] == "miss"
    async with serve(two) as c2:  # a fresh process's worth of state: nothing in its L1
        reworded = await ask(c2, "at night, which animal hunts mice?")
        assert reworded["cache"] == "l2" and reworded["results"] == first["results"]
        # purge through the admin route reaches Redis: the entry is gone for every replica
        assert (await c2.delete("/admin/tenants/acme/cache", headers=ADMIN)).status_code == 200
        assert (await ask(c2, "at night which animal hunts mice"))["cache"] == "miss"


async def test_a_query_tries_an_unreachable_redis_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the Redis breaker opens, a request pays for Redis failing once (its L1 sync), not once per
    call: the L2 lookup and the L2 write that follow are not tried (the CI run that froze Redis mid-load
    saw 700 ms answers under a 400 ms deadline from one timeout per call)."""
    settings = service_settings(
        tmp_path,
        monkeypatch,
        redis_url="redis://127.0.0.1:1/0",  # nothing listens
        cache_secret="s" * 32,
        breaker_min_calls=1000,  # the breaker stays closed: every call would try Redis
        breaker_window_calls=1000,
        breaker_sync_ms=600_000,
    )
    async with serve(create_app(settings)) as client:
        await ingest(client, "acme", ACME_DOCS)
        body = await ask(client, "Which animal hunts mice at night?")
    reasons = [d["reason"] for d in body["degraded"] if d["code"] == "redis_unavailable"]
    assert len(reasons) >= 2, body["degraded"]  # the L1 sync failed, then the L2 was skipped (and the write)
    tried = [r for r in reasons if not r.startswith("not tried again in this request")]
    assert len(tried) == 1 and "ConnectionError" in tried[0], reasons


# another deployment's documents for the same tenant: nothing in common with ACME_DOCS
OTHER_DOCS = [
    {"id": "fox", "title": "Fox", "text": "Foxes hunt mice at night in fields and forests."},
    {"id": "oak", "title": "Oak", "text": "Oaks are trees that grow acorns."},
]


@pytest.mark.parametrize("other", ["collection", "data_dir"])
async def test_two_indexes_on_one_redis_never_share_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str, other: str
) -> None:
    """Two deployments on one Redis — another collection, or the same collection name in another data dir
    (both publish ``v000001``) — the same tenant asking the same query gets its own index's answer, never
    the other's cached one: the cache namespace carries the index identity (collection, version, manifest
    hash) and the keys are per collection."""
    shared = {"redis_url": redis_url, "cache_threshold": 0.8, "cache_secret": "s" * 32}
    elsewhere = {"collection": "other"} if other == "collection" else {"data_dir": tmp_path / "other-data"}
    one = create_app(service_settings(tmp_path, monkeypatch, **shared))
    two = create_app(service_settings(tmp_path, monkeypatch, **shared, **elsewhere))
    async with serve(one) as c1:
        await ingest(c1, "acme", ACME_DOCS)
        first = await ask(c1, "Which animal hunts mice at night?")
        assert first["cache"] == "miss" and first["index_version"] == "v000001"
    async with serve(two) as c2:
        await ingest(c2, "acme", OTHER_DOCS)
        second = await ask(c2, "Which animal hunts mice at night?")
    assert second["index_version"] == "v000001"  # the same version name: only its identity tells them apart
    assert second["cache"] == "miss", second
    assert {r["doc_id"] for r in second["results"]} <= {"fox", "oak"}


class SwitchableEmbedder(HashEmbedder):
    """The hash embedder, which fails while ``down`` (a model server that went away)."""

    down = False

    def embed(self, texts, *, batch_size=32, progress=False):  # type: ignore[no-untyped-def]
        if self.down:
            raise RuntimeError("embedder down")
        return super().embed(texts, batch_size=batch_size, progress=progress)


@pytest.mark.parametrize("held_s", [0.3, 0.0])
async def test_a_degraded_answer_is_held_briefly_marked_and_replaced_by_the_full_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_s: float
) -> None:
    embedder = SwitchableEmbedder(64)
    app = create_app(service_settings(tmp_path, monkeypatch, cache_degraded_ttl_s=held_s), embedder=embedder)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        await ingest(client, "globex", GLOBEX_DOCS)
        embedder.down = True
        first = await ask(client, "who hunts mice at night")
        assert first["cache"] == "miss"
        assert {(d["step"], d["code"]) for d in first["degraded"]} >= {("retrieve", "bm25_only")}
        repeat = await ask(client, "who hunts mice at night")
        if held_s == 0:  # not held: every repeat recomputes
            assert repeat["cache"] == "miss"
            return
        assert repeat["cache"] == "l1" and repeat["results"] == first["results"]
        codes = [(d["step"], d["code"]) for d in repeat["degraded"]]
        assert ("retrieve", "bm25_only") in codes  # it says what the answer gave up
        assert ("cache", "degraded_entry") in codes  # and that it was held
        assert "embed" not in repeat["timings_ms"]
        # another tenant's same words: its own answer, never acme's held one
        assert (await ask(client, "who hunts mice at night", GLOBEX))["cache"] == "miss"
        embedder.down = False
        await asyncio.sleep(held_s + 0.1)
        full = await ask(client, "who hunts mice at night")
        assert full["cache"] == "miss" and full["degraded"] == []
        again = await ask(client, "who hunts mice at night")
        assert again["cache"] == "l1" and again["degraded"] == [] and again["results"] == full["results"]
