"""Redis behind its breaker, tried once per request: after a failure within :func:`one_attempt`, the
request's later Redis calls raise at once instead of each waiting out its own timeout."""

from __future__ import annotations

from typing import Any

import pytest

from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.guarded_redis import GuardedRedis, RedisUnavailable, one_attempt
from rag.service.redis_client import connect_redis
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

DEAD = "redis://127.0.0.1:1/0"  # nothing listens: every call fails


def redis_at(url: str) -> GuardedRedis:
    # a breaker that never opens here: what is counted is this module's own once-per-request rule
    policy = BreakerPolicy(min_calls=1000, window_calls=1000)
    return GuardedRedis(connect_redis(url, timeout_s=0.2), Breaker("redis", policy), timeout_s=0.2)


async def three_calls(redis: GuardedRedis) -> tuple[int, list[str]]:
    """How many of three calls reached the client, and what each raised."""
    tried = 0
    errors: list[str] = []

    async def ping(client: Any) -> Any:
        nonlocal tried
        tried += 1
        return await client.ping()

    for _ in range(3):
        try:
            await redis.run(ping)
        except RedisUnavailable as exc:
            errors.append(str(exc))
    return tried, errors


async def test_within_one_request_a_failed_redis_is_not_tried_again() -> None:
    redis = redis_at(DEAD)
    with one_attempt():
        tried, errors = await three_calls(redis)
    assert tried == 1 and len(errors) == 3
    assert "ConnectionError" in errors[0]
    assert all(e.startswith("not tried again in this request") for e in errors[1:])
    # outside a request (background loops) and in the next request, each call tries Redis
    assert (await three_calls(redis))[0] == 3
    with one_attempt():
        assert (await three_calls(redis))[0] == 1
    await redis.close()


async def test_a_request_that_reaches_redis_keeps_using_it(redis_process: RedisServer) -> None:
    redis = redis_at(redis_process.url)
    with one_attempt():
        tried, errors = await three_calls(redis)
    assert (tried, errors) == (3, [])
    await redis.close()
