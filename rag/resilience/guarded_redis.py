"""Redis behind its breaker. Redis is never the source of truth: every caller has an answer for
:class:`RedisUnavailable` (the cache is off, the rate limit runs in process, breaker state stays local).

Within :func:`one_attempt` (a request), Redis is tried once: after a failure, the request's later calls
raise at once instead of each waiting out its own timeout. The breaker does the same across requests, but
only once enough calls have failed; until then a request would pay one timeout per call (rate limit, cache
sync, L2 lookup, L2 write)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from redis.asyncio import Redis

from rag.resilience.breaker import Breaker

T = TypeVar("T")


class RedisUnavailable(RuntimeError):
    """Redis failed, timed out, or its breaker is open; the message says which."""


@dataclass(slots=True)
class _Attempt:
    failure: str = ""  # why Redis failed in this scope ("" while it has not)


# mutable and shared: a task started within the scope (a single-flight computation) sees the same attempt
_attempt: ContextVar[_Attempt | None] = ContextVar("rag_redis_attempt", default=None)


@contextmanager
def one_attempt() -> Iterator[None]:
    """Within this block (one request), once a Redis call fails the later ones are not tried."""
    token = _attempt.set(_Attempt())
    try:
        yield
    finally:
        _attempt.reset(token)


class GuardedRedis:
    def __init__(self, client: Redis, breaker: Breaker, *, timeout_s: float) -> None:
        self.client = client
        self.breaker = breaker
        self.timeout_s = timeout_s

    async def run(self, fn: Callable[[Redis], Awaitable[T]]) -> T:
        attempt = _attempt.get()
        if attempt is not None and attempt.failure:
            raise RedisUnavailable(f"not tried again in this request: {attempt.failure}"[:200])
        try:
            return await self.breaker.call(lambda: fn(self.client), timeout_s=self.timeout_s)
        except Exception as exc:
            why = f"redis unavailable: {type(exc).__name__}: {exc}"[:200]
            if attempt is not None:
                attempt.failure = why
            raise RedisUnavailable(why) from exc

    async def close(self) -> None:
        await self.client.aclose()
