"""Per-tenant rate limits: a token bucket, in process by default, in Redis when ``RAG_REDIS_URL`` is set
(so that N replicas share one budget). Redis is never required: if it fails, or its breaker is open, the
limit falls back to the replica's own bucket for that call at once."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Protocol

from rag.resilience.redis import GuardedRedis, RedisUnavailable

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after_s: float = 0.0  # when the next request would be allowed (0 if allowed)

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after_s)))


def refill(tokens: float, elapsed_s: float, rate: float, burst: float) -> float:
    """Tokens after ``elapsed_s`` seconds of refilling at ``rate`` per second, capped at ``burst``."""
    return min(burst, tokens + max(0.0, elapsed_s) * rate)


def take(tokens: float, rate: float, cost: float = 1.0) -> tuple[Decision, float]:
    """Spend ``cost`` tokens if there are enough: (decision, tokens left)."""
    if tokens >= cost:
        return Decision(True), tokens - cost
    return Decision(False, (cost - tokens) / rate), tokens


class RateLimiter(Protocol):
    async def acquire(self, tenant: str) -> Decision: ...


class InProcessRateLimiter:
    """One bucket per tenant in this process (used from the event loop only)."""

    def __init__(self, rate: float, burst: float, clock: Any = time.monotonic) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"rate must be > 0 and burst >= 1, got rate={rate} burst={burst}")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._buckets: dict[str, tuple[float, float]] = {}

    def acquire_now(self, tenant: str) -> Decision:
        now = self.clock()
        tokens, last = self._buckets.get(tenant, (self.burst, now))
        decision, left = take(refill(tokens, now - last, self.rate, self.burst), self.rate)
        self._buckets[tenant] = (left, now)
        return decision

    async def acquire(self, tenant: str) -> Decision:
        return self.acquire_now(tenant)


# The same bucket as refill() + take(), atomically in Redis, on Redis' clock (all replicas agree on it).
TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  retry = (cost - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, tostring(retry)}
"""


class RedisRateLimiter:
    """The bucket in Redis (:meth:`RedisKeys.rate_limit`), shared by the deployment's replicas, behind the
    Redis breaker and timeout; when Redis fails or the breaker is open, this call uses ``fallback``
    (without waiting on Redis). The Redis client is its opener's to close."""

    def __init__(self, redis: GuardedRedis, rate: float, burst: float) -> None:
        self.redis = redis
        self.rate, self.burst = rate, burst
        self.fallback = InProcessRateLimiter(rate, burst)
        self._bucket = redis.script(TOKEN_BUCKET_LUA)
        self._warned_at = 0.0

    async def acquire(self, tenant: str) -> Decision:
        try:
            allowed, retry = await self._bucket(
                [self.redis.keys.rate_limit(tenant)], [self.rate, self.burst, 1]
            )
        except RedisUnavailable as exc:  # Redis down, slow or its breaker open: this replica's bucket decides
            now = time.monotonic()
            if now - self._warned_at > 30:
                self._warned_at = now
                log.warning("rate limit: %s; using the in-process bucket", exc)
            return self.fallback.acquire_now(tenant)
        return Decision(bool(int(allowed)), float(retry))
