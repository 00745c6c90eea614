"""Breaker state shared through a real Redis: the sync loop survives any value (log, count, skip) and
applies the next good one."""

from __future__ import annotations

import json
import time

import pytest
from redis.asyncio import Redis

from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import BreakerPolicy, State
from rag.resilience.guarded_redis import GuardedRedis
from rag.resilience.shared import PREFIX, SharedBreakerState
from rag.service.redis_client import connect_redis
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
    guarded = GuardedRedis(connect_redis(redis_process.url, timeout_s=0.5), board["redis"], timeout_s=0.5)
    shared = SharedBreakerState(board, guarded, "replica-a", interval_s=0.01)
    writer = Redis.from_url(redis_process.url)
    try:
        shared.start()
        for value in MALFORMED:
            seen = background_errors("breaker_sync")
            await writer.set(PREFIX + "llm", value)
            await until(lambda seen=seen: background_errors("breaker_sync") > seen)  # type: ignore[misc]
        assert board["llm"].state is State.CLOSED and board["redis"].state is State.CLOSED
        good = {"by": "replica-b", "opened_at": time.time(), "reason": "llm down"}
        await writer.set(PREFIX + "llm", json.dumps(good), px=5000)
        await until(lambda: board["llm"].state is State.OPEN)
        assert "replica-b" in (board["llm"].last_reason or "")
    finally:
        await shared.close()
        await writer.aclose()
        await guarded.close()
