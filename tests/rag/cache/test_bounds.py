"""Memory of the query cache stays bounded whatever clients send: L1 and L2 by count and bytes, per tenant
and overall; with Redis, the ids and namespaces learnt from the shared stream too; namespaces of an index
version no longer served are dropped."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from rag.cache.l1 import LruTtl
from rag.cache.semantic import QueryCache
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis
from rag.text.analyzer import Analyzer
from tests.rag.cache.conftest import DIM, answer, index, no_idf, ns, vector

pytestmark = pytest.mark.anyio

SECRET = b"test-cache-secret-0123456789abcdef"


def make(**overrides: Any) -> QueryCache:
    values: dict[str, Any] = {"dim": DIM, "analyzer": Analyzer(), "threshold": 0.9, "ttl_s": 600.0}
    return QueryCache(**{**values, **overrides})


def guarded(url: str) -> GuardedRedis:
    return GuardedRedis.connect(url, Breaker("redis", BreakerPolicy()), timeout_s=1.0, collection="svc")


async def traced_growth(warm_up: Callable[[], Awaitable[None]], more: Callable[[], Awaitable[None]]) -> int:
    """Bytes still allocated after ``more`` that were not after ``warm_up``."""
    tracemalloc.start()
    try:
        await warm_up()
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        await more()
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


async def test_l2_answers_without_redis_are_bounded_like_their_vectors() -> None:
    """5000 puts into one namespace capped at 10 entries keep 10 answers, not 5000."""
    cache = make(l1_entries=10, l2_entries=10)

    async def puts(start: int, stop: int) -> None:
        for i in range(start, stop):
            await cache.put(ns(), f"query {i}", vector(i), answer(text_bytes=2000))

    growth = await traced_growth(lambda: puts(0, 1000), lambda: puts(1000, 5000))
    assert growth < 200_000, f"{growth} bytes more after 4000 more puts (4000 answers of 2 KB = 8 MB)"
    stats = cache.stats()
    assert stats.l2_entries == 10 and stats.l1_entries == 10


async def test_l2_is_bounded_by_bytes_per_tenant_and_overall() -> None:
    """One tenant flooding the cache fills its share of the byte and entry caps, never another's part."""
    cache = make(l1_entries=1, l2_entries=100_000, l2_max_bytes=200_000, l2_max_entries=80, tenant_share=0.5)
    await cache.put(ns("globex"), "the globex plan", vector(1), answer(doc="plan"))
    for i in range(1000):
        await cache.put(ns("acme"), f"acme query {i}", vector(100 + i), answer(text_bytes=2000))
    acme, overall = cache.stats("acme"), cache.stats()
    assert 0 < acme.l2_bytes <= 100_000 and acme.l2_entries <= 40
    assert overall.l2_bytes <= 200_000 and overall.l2_entries <= 80
    kept = await cache.get_similar(ns("globex"), "the globex plan", vector(1), no_idf)
    assert kept is not None and kept.answer["results"][0]["doc_id"] == "plan"
    # an answer larger than a tenant's share is not held at all (L2), nor one larger than L1's cap (L1)
    small = make(l1_max_bytes=10_000, l2_max_bytes=10_000, tenant_share=0.5)
    await small.put(ns(), "huge", vector(7), answer(text_bytes=20_000))
    assert small.stats().l2_entries == 0 and small.stats().l1_entries == 0


async def test_evicting_a_vector_evicts_its_answer() -> None:
    cache = make(l1_entries=1, l2_entries=2)
    for i in range(3):
        await cache.put(ns(), f"query {i}", vector(i), answer(doc=f"d{i}"))
    assert await cache.get_similar(ns(), "query 0", vector(0), no_idf) is None  # evicted, answer and all
    assert cache.stats().l2_entries == 2
    hit = await cache.get_similar(ns(), "query 2", vector(2), no_idf)
    assert hit is not None and hit.answer["results"][0]["doc_id"] == "d2"


def test_l1_is_bounded_by_bytes_as_well_as_entries() -> None:
    l1: LruTtl[str] = LruTtl(1000, 60.0, max_bytes=50_000)
    for i in range(100):
        l1.put(f"k{i}", "v", size=10_000)
    assert len(l1) == 5 and l1.bytes == 50_000
    assert l1.get("k99") == "v" and l1.get("k94") is None  # the least recently used went first
    l1.put("big", "v", size=50_001)  # larger than the whole cap: not held, nothing evicted for it
    assert l1.get("big") is None and len(l1) == 5


async def test_l1_of_the_cache_counts_answer_bytes() -> None:
    """An answer with top_k=100 is ~40 KB: the L1 cap in bytes holds fewer of them than its entry cap."""
    cache = make(l1_entries=10_000, l1_max_bytes=100_000)
    for i in range(50):
        await cache.put(ns(), f"query {i}", None, answer(text_bytes=20_000))
    stats = cache.stats()
    assert stats.l1_entries <= 5 and stats.l1_bytes <= 100_000


async def test_with_redis_known_ids_and_namespaces_stay_bounded(redis_url: str) -> None:
    """Every filter value makes a namespace: with Redis, neither the ids read from the shared stream nor
    the namespaces grow with the number of queries."""
    cache = make(redis=guarded(redis_url), secret=SECRET, l1_entries=10, l2_entries=10, max_spaces=4)

    async def fill(start: int, stop: int) -> None:
        for i in range(start, stop):
            await cache.put(ns(kind=f"k{i}"), f"query {i}", vector(i), answer(text_bytes=100))
            if i % 100 == 0:  # read the shared stream (every id in it comes back to this replica)
                await cache.get_similar(ns(kind="k0"), "query 0", vector(0), no_idf)

    try:
        growth = await traced_growth(lambda: fill(0, 300), lambda: fill(300, 2100))
    finally:
        await cache.redis.close()  # type: ignore[union-attr]
    assert growth < 150_000, f"{growth} bytes more after 1800 more namespaces"
    stats = cache.stats()
    assert stats.spaces <= 4 and stats.l2_entries <= 40 and stats.tenants == 1


async def test_namespaces_of_an_index_version_no_longer_served_are_dropped() -> None:
    cache = make()
    for i in range(5):
        await cache.put(ns(version="v1", kind=f"k{i}"), f"query {i}", vector(i), answer("v1"))
    assert cache.stats().spaces == 5
    cache.serve_index(index("v2"))  # the service switched (it may say so from another thread)
    await cache.put(ns(version="v2"), "query 0", vector(0), answer("v2"))
    assert cache.stats().spaces == 1 and cache.stats().l2_entries == 1
    assert await cache.get_similar(ns(version="v1", kind="k0"), "query 0", vector(0), no_idf) is None
    await cache.put(ns(version="v1"), "late", vector(9), answer("v1"))  # a query that began before it
    assert cache.stats().spaces == 1  # an answer of a version no longer served is not kept


async def test_tenants_and_namespaces_per_tenant_are_capped() -> None:
    cache = make(max_spaces=3, max_tenants=4)
    for t in range(10):
        for k in range(6):
            await cache.put(ns(f"t{t}", kind=f"k{k}"), f"query {k}", vector(k), answer())
    stats = cache.stats()
    assert stats.tenants == 4 and stats.spaces == 12
    # the most recently used survive
    assert await cache.get_similar(ns("t9", kind="k5"), "query 5", vector(5), no_idf) is not None
    assert await cache.get_similar(ns("t0", kind="k5"), "query 5", vector(5), no_idf) is None
