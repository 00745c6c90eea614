"""Redis behind its breaker. Redis is never the source of truth: every caller has an answer for
:class:`RedisUnavailable` (the cache is off, the rate limit runs in process, breaker state stays local)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis

from rag.resilience.breaker import Breaker

T = TypeVar("T")


class RedisUnavailable(RuntimeError):
    """Redis failed, timed out, or its breaker is open; the message says which."""


class GuardedRedis:
    def __init__(self, client: Redis, breaker: Breaker, *, timeout_s: float) -> None:
        self.client = client
        self.breaker = breaker
        self.timeout_s = timeout_s

    async def run(self, fn: Callable[[Redis], Awaitable[T]]) -> T:
        try:
            return await self.breaker.call(lambda: fn(self.client), timeout_s=self.timeout_s)
        except Exception as exc:
            raise RedisUnavailable(f"redis unavailable: {type(exc).__name__}: {exc}"[:200]) from exc

    async def close(self) -> None:
        await self.client.aclose()
