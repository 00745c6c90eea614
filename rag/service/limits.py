"""Per-tenant rate limits of the service: one token bucket per tenant (and per bucket name), shared
through Redis when configured (:mod:`rag.service.ratelimit` holds the limiters).

Invariant: ``tenant:bucket`` cannot be a tenant name (tenants match ``TENANT_PATTERN``, which has no
``:``), so a named bucket (e.g. ``feedback``) never shares tokens with a tenant's queries.
"""

from __future__ import annotations

from rag import metrics
from rag.config import Settings
from rag.resilience.redis import GuardedRedis
from rag.service.ratelimit import Decision, InProcessRateLimiter, RateLimiter, RedisRateLimiter


class RateLimits:
    def __init__(self, settings: Settings) -> None:
        self.qps = settings.rate_limit_qps  # 0: no limit
        self.burst = settings.rate_limit_burst
        self._limiter: RateLimiter | None = None

    def start(self, redis: GuardedRedis | None) -> None:
        """Build the limiter: through ``redis`` when there is one, else in process."""
        if self.qps > 0:
            self._limiter = (
                RedisRateLimiter(redis, self.qps, self.burst)
                if redis is not None
                else InProcessRateLimiter(self.qps, self.burst)
            )

    async def take(self, tenant: str, bucket: str | None = None) -> Decision:
        """Take a token of ``tenant``'s queries, or of its ``bucket`` (same rate and burst, counted
        apart)."""
        if self._limiter is None:
            return Decision(True)
        decision = await self._limiter.acquire(tenant if bucket is None else f"{tenant}:{bucket}")
        if not decision.allowed:
            metrics.RATE_LIMITED.labels(tenant).inc()
        return decision
