"""Breaker state shared through a real Redis: the sync loop survives any value (log, count, skip) and
applies the next good one; another deployment's (collection's) breakers are not applied."""

from __future__ import annotations

import json
import time

import pytest
from redis.asyncio import Redis

from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import BreakerPolicy, State
from rag.resilience.redis import GuardedRedis, RedisKeys
from rag.resilience.shared import SharedBreakerState
from rag.testing.background import background_errors, until
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

MALFORMED: list[str | bytes] = [
    "not-json",
    "[]",
    '"a string"',
    '{"by": "replica-b", "opened_at": "yesterday"}',
    '{"by": "replica-b", "opened_at": NaN}',
    '{"by": ["replica-b"], "opened_at": 1}',
    '{"by": "replica-b", "opened_at": 1e999}',
    b"\xff\xfe not utf-8",
]


async def test_breaker_sync_loop_survives_malformed_values_and_applies_the_next_good_one(
    redis_process: RedisServer,
) -> None:
    board = BreakerBoard({"llm": BreakerPolicy(), "redis": BreakerPolicy()})
    guarded = GuardedRedis.connect(redis_process.url, board["redis"], timeout_s=0.5, collection="svc")
    shared = SharedBreakerState(board, guarded, "replica-a", interval_s=0.01)
    writer = Redis.from_url(redis_process.url)
    key = RedisKeys("svc").breaker("llm")
    try:
        shared.start()
        for value in MALFORMED:
            seen = background_errors("breaker_sync")
            await writer.set(key, value)
            await until(lambda seen=seen: background_errors("breaker_sync") > seen)  # type: ignore[misc]
        assert board["llm"].state is State.CLOSED and board["redis"].state is State.CLOSED
        good = {"by": "replica-b", "opened_at": time.time(), "reason": "llm down"}
        await writer.set(key, json.dumps(good), px=5000)
        await until(lambda: board["llm"].state is State.OPEN)
        assert "replica-b" in (board["llm"].last_reason or "")
    finally:
        await shared.close()
        await writer.aclose()
        await guarded.close()


async def test_a_breaker_opened_by_another_deployment_is_not_applied(redis_process: RedisServer) -> None:
    """Two collections on one Redis: a replica of ``other`` opening its ``llm`` breaker says nothing about
    the dependencies this deployment is configured with."""
    board = BreakerBoard({"llm": BreakerPolicy(), "redis": BreakerPolicy()})
    guarded = GuardedRedis.connect(redis_process.url, board["redis"], timeout_s=0.5, collection="svc")
    shared = SharedBreakerState(board, guarded, "replica-a", interval_s=60)
    writer = Redis.from_url(redis_process.url)
    record = json.dumps({"by": "replica-b", "opened_at": time.time(), "reason": "llm down"})
    try:
        await writer.set(RedisKeys("other").breaker("llm"), record, px=5000)
        await shared.sync_once()
        assert board["llm"].state is State.CLOSED
        await writer.set(RedisKeys("svc").breaker("llm"), record, px=5000)  # a replica of this deployment
        await shared.sync_once()
        assert board["llm"].state is State.OPEN
    finally:
        await shared.close()
        await writer.aclose()
        await guarded.close()
