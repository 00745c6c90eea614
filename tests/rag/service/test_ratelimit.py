"""Token buckets: the pure math, the in-process limiter, and the shared Redis one (a real redis-server)."""

from __future__ import annotations

import asyncio

import pytest

from rag.resilience.breaker import Breaker, BreakerPolicy, State
from rag.resilience.redis import GuardedRedis
from rag.service.ratelimit import InProcessRateLimiter, RedisRateLimiter, refill, take


def guarded(url: str, timeout_s: float, collection: str = "test") -> GuardedRedis:
    breaker = Breaker("redis", BreakerPolicy())
    return GuardedRedis.connect(url, breaker, timeout_s=timeout_s, collection=collection)


def test_refill_caps_at_burst_and_ignores_clock_going_back() -> None:
    assert refill(0.0, 2.0, rate=1.5, burst=10) == 3.0
    assert refill(9.0, 5.0, rate=1.0, burst=10) == 10
    assert refill(4.0, -3.0, rate=1.0, burst=10) == 4.0


def test_take_spends_or_says_how_long_to_wait() -> None:
    decision, left = take(2.5, rate=2.0)
    assert decision.allowed and left == 1.5
    decision, left = take(0.25, rate=2.0)
    assert not decision.allowed and left == 0.25 and decision.retry_after_s == pytest.approx(0.375)
    assert decision.retry_after_header == "1"


def test_in_process_bucket_per_tenant_with_a_fake_clock() -> None:
    now = [0.0]
    limiter = InProcessRateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.acquire_now("a").allowed for _ in range(4)] == [True, True, True, False]
    assert limiter.acquire_now("b").allowed  # its own bucket
    now[0] = 0.5  # one token back
    assert limiter.acquire_now("a").allowed and not limiter.acquire_now("a").allowed


def test_bad_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="rate must be > 0"):
        InProcessRateLimiter(rate=0, burst=1)


def test_redis_bucket_is_shared_by_replicas_and_falls_back_when_redis_is_down(redis_url: str) -> None:
    async def scenario() -> None:
        replica_a = RedisRateLimiter(guarded(redis_url, 0.5), rate=0.01, burst=3)
        replica_b = RedisRateLimiter(guarded(redis_url, 0.5), rate=0.01, burst=3)
        got = [await replica_a.acquire("t"), await replica_b.acquire("t"), await replica_a.acquire("t")]
        assert all(d.allowed for d in got)
        refused = await replica_b.acquire("t")  # the fourth call, across both replicas, is over the burst
        assert not refused.allowed and refused.retry_after_s > 50
        assert (await replica_b.acquire("other")).allowed
        # another deployment (collection) on the same Redis has buckets of its own
        elsewhere = RedisRateLimiter(guarded(redis_url, 0.5, collection="other"), rate=0.01, burst=3)
        assert (await elsewhere.acquire("t")).allowed
        for limiter in (replica_a, replica_b, elsewhere):
            await limiter.redis.close()
        # Redis unreachable: answered at once by the replica's own bucket, never an error
        dead = RedisRateLimiter(guarded("redis://127.0.0.1:1/0", 0.05), rate=0.01, burst=1)
        assert (await dead.acquire("t")).allowed
        assert not (await dead.acquire("t")).allowed
        await dead.redis.close()

    asyncio.run(scenario())


def test_an_open_redis_breaker_sends_the_limit_to_the_local_bucket_without_calling_redis(
    redis_url: str,
) -> None:
    """A frozen Redis must not cost every request its timeout: once the Redis breaker is open, the shared
    bucket is not consulted (here Redis would refuse, the fresh local bucket allows)."""

    async def scenario() -> None:
        other = RedisRateLimiter(guarded(redis_url, 0.5), rate=0.01, burst=1)
        assert (await other.acquire("t")).allowed  # the shared bucket is now empty
        redis = guarded(redis_url, 0.5)
        limiter = RedisRateLimiter(redis, rate=0.01, burst=1)
        redis.breaker.force(State.OPEN, "test: redis is down")
        assert (await limiter.acquire("t")).allowed  # the local bucket decided
        assert redis.breaker.snapshot()["calls_in_window"] == 0
        redis.breaker.force(State.CLOSED, "test: redis is back")
        assert not (await limiter.acquire("t")).allowed  # the shared bucket decides again
        await other.redis.close()
        await redis.close()

    asyncio.run(scenario())
