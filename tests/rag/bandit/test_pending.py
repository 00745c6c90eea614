"""Pending decisions shared through a real redis-server: recorded by one replica, taken by another, once;
bounded per tenant, with the decision TTL; one tenant never reaches another's; without Redis (down, or
its breaker open) they stay in process and nothing is lost."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from rag.bandit.decisions import DecisionLog
from rag.bandit.pending import PendingDecisions, RedisDecisions, decode, encode
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

X = [1.0, 0.5, -0.25]


def redis_at(url: str, timeout_s: float = 0.5) -> GuardedRedis:
    policy = BreakerPolicy(min_calls=1000, window_calls=1000)  # never opens: each call tries Redis
    return GuardedRedis.connect(url, Breaker("redis", policy), timeout_s=timeout_s, collection="svc")


@pytest.fixture
async def replicas(redis_url: str) -> AsyncIterator[Callable[..., PendingDecisions]]:
    """Make replicas' PendingDecisions over the test's Redis (each its own client and local log)."""
    made: list[tuple[PendingDecisions, GuardedRedis]] = []

    def make(**log: float) -> PendingDecisions:
        redis = redis_at(redis_url)
        pending = PendingDecisions(DecisionLog(**log), RedisDecisions(redis))  # type: ignore[arg-type]
        made.append((pending, redis))
        return pending

    yield make
    for pending, redis in made:
        await pending.close()
        await redis.close()


async def record(p: PendingDecisions, request_id: str, tenant: str = "acme", arm: str = "hybrid") -> None:
    p.record(request_id, tenant, arm, X, 0.9, ["d1", "d2"], allowed=["bm25", "hybrid"], cost=0.02)
    await p.written(tenant, request_id)


async def keys(redis: GuardedRedis, pattern: str = "rag:svc:decisions:*") -> list[str]:
    found = await redis.run(lambda r: r.keys(pattern))
    return sorted(k.decode() for k in found)


async def test_a_decision_recorded_by_one_replica_is_taken_by_another_once(
    replicas: Callable[..., PendingDecisions],
) -> None:
    one, two = replicas(), replicas()
    await record(one, "req-1")
    assert len(one) == 0  # in Redis now, not in process
    taken = await two.take("req-1", "acme")
    assert taken is not None
    assert (taken.arm, taken.features, taken.propensity) == ("hybrid", tuple(X), 0.9)
    assert (taken.served_doc_ids, taken.allowed, taken.cost) == (("d1", "d2"), ("bm25", "hybrid"), 0.02)
    assert await one.take("req-1", "acme") is None
    assert await two.take("req-1", "acme") is None


async def test_the_query_text_travels_with_the_decision_for_the_feedback_log(
    replicas: Callable[..., PendingDecisions],
) -> None:
    one, two = replicas(), replicas()
    one.record("req-q", "acme", "hybrid", X, 1.0, ["d2", "d1"], query="who hunts mice? ünïcode")
    await one.written("acme", "req-q")
    taken = await two.take("req-q", "acme")
    assert taken is not None and taken.query == "who hunts mice? ünïcode"
    assert taken.served_doc_ids == ("d2", "d1")


def test_a_decision_written_before_the_query_was_kept_still_decodes() -> None:
    old = DecisionLog().record("r", "acme", "bm25", X, 1.0, ["d1"])
    raw = encode(old).replace(',"query":""', "")
    assert '"query"' not in raw
    assert decode(raw) == old


async def test_two_replicas_taking_one_decision_at_once_one_wins(
    replicas: Callable[..., PendingDecisions],
) -> None:
    recorder, takers = replicas(), [replicas() for _ in range(4)]
    for i in range(20):
        await record(recorder, f"race-{i}")
        got = await asyncio.gather(*(t.take(f"race-{i}", "acme") for t in takers))
        assert sum(d is not None for d in got) == 1


async def test_a_tenant_never_reaches_another_tenants_decision(
    replicas: Callable[..., PendingDecisions],
) -> None:
    one, two = replicas(), replicas()
    await record(one, "shared-id", tenant="acme", arm="hybrid")
    await record(one, "shared-id", tenant="globex", arm="bm25")  # the same client-chosen id
    assert await two.take("shared-id", "initech") is None
    globex = await two.take("shared-id", "globex")
    assert globex is not None and globex.arm == "bm25" and globex.tenant == "globex"
    acme = await two.take("shared-id", "acme")
    assert acme is not None and acme.arm == "hybrid"


async def test_decisions_are_bounded_per_tenant_and_expire(
    replicas: Callable[..., PendingDecisions], redis_url: str
) -> None:
    one = replicas(max_entries=5, ttl_s=60.0)
    for i in range(8):
        await record(one, f"r{i}")
    await record(one, "g0", tenant="globex")
    redis = redis_at(redis_url)
    try:
        acme = await keys(redis, "rag:svc:decisions:{acme}:*")
        assert len(acme) == 6  # the index and the 5 newest decisions
        assert "rag:svc:decisions:{acme}:d:r2" not in acme and "rag:svc:decisions:{acme}:d:r3" in acme
        assert await redis.run(lambda r: r.zcard("rag:svc:decisions:{acme}:index")) == 5
        assert len(await keys(redis, "rag:svc:decisions:{globex}:*")) == 2  # another tenant's cap
        for key in acme:
            assert 0 < await redis.run(lambda r, k=key: r.pttl(k)) <= 60_000  # type: ignore[misc]
        two = replicas(max_entries=5, ttl_s=60.0)
        assert await two.take("r0", "acme") is None  # dropped past the cap
        assert await two.take("r7", "acme") is not None
        assert await redis.run(lambda r: r.zcard("rag:svc:decisions:{acme}:index")) == 4
    finally:
        await redis.close()


async def test_an_expired_decision_is_gone(replicas: Callable[..., PendingDecisions]) -> None:
    one, two = replicas(ttl_s=0.05), replicas(ttl_s=0.05)
    await record(one, "soon-gone")
    await asyncio.sleep(0.1)  # past the 50 ms TTL (Redis expires the key)
    assert await two.take("soon-gone", "acme") is None


async def test_with_redis_down_decisions_stay_in_process_and_are_not_lost(
    redis_process: RedisServer,
) -> None:
    redis = redis_at(redis_process.url, timeout_s=0.2)
    one = PendingDecisions(DecisionLog(), RedisDecisions(redis))
    try:
        await record(one, "before")  # in Redis
        redis_process.pause()
        await record(one, "during")  # the write times out: kept here
        assert len(one) == 1
        assert await one.take("during", "acme") is not None  # Redis still down: taken from this replica
        await record(one, "during-2")
        redis_process.resume()
        assert await one.take("before", "acme") is not None  # Redis back: what it held is there
        assert await one.take("during-2", "acme") is not None  # and what it missed is here
        assert len(one) == 0
    finally:
        redis_process.resume()
        await one.close()
        await redis.close()


async def test_without_redis_it_is_the_process_log(replicas: Callable[..., PendingDecisions]) -> None:
    alone = PendingDecisions(DecisionLog())
    alone.record("r", "acme", "hybrid", X, 1.0, ["d1"])
    await alone.written("acme", "r")
    assert len(alone) == 1
    assert await alone.take("r", "globex") is None
    assert await alone.take("r", "acme") is not None
    await alone.close()


async def test_a_decision_recorded_again_under_one_id_keeps_the_newest(
    replicas: Callable[..., PendingDecisions],
) -> None:
    one, two = replicas(), replicas()
    one.record("again", "acme", "bm25", X, 1.0, ["d1"])
    one.record("again", "acme", "hybrid", X, 1.0, ["d1"])  # before the first write has landed
    await one.written("acme", "again")
    taken = await two.take("again", "acme")
    assert taken is not None and taken.arm == "hybrid"
    assert await one.take("again", "acme") is None and len(one) == 0
