"""Rollout administration: the hot-reloaded rollout config and the auto-fallback trips, for admin routes.

Owns the :class:`~rag.rollout.watcher.ConfigWatcher` (the file, and the deployment's Redis key when Redis
is configured), which holds the serving :class:`~rag.rollout.policy.RoutingPolicy` in the one reference
the other parts read (:attr:`RolloutAdmin.policy`). An admin's config is validated and built before it is
written anywhere; with Redis it reaches every replica.
"""

from __future__ import annotations

from typing import Any

from rag import metrics
from rag.resilience.redis import GuardedRedis
from rag.rollout.config import Format, RolloutConfig
from rag.rollout.fallback import AutoFallback
from rag.rollout.policy import RoutingPolicy
from rag.rollout.watcher import ConfigWatcher


class RolloutAdmin:
    def __init__(self, watcher: ConfigWatcher, fallback: AutoFallback) -> None:
        """``fallback``: the ledger's auto-fallback windows, whose trips an admin reads and resets."""
        self.watcher = watcher
        self.fallback = fallback
        self._redis: GuardedRedis | None = None
        watcher.listeners.append(_reloaded)
        _serving(watcher.policy)

    @property
    def policy(self) -> RoutingPolicy:
        """The serving routing policy: the one reference every part of the routing state reads."""
        return self.watcher.policy

    @property
    def config(self) -> RolloutConfig:
        return self.watcher.current

    def start(self, redis: GuardedRedis | None) -> None:
        """Watch the config: the file, and the deployment's Redis key when Redis is configured."""
        self._redis = redis
        if redis is not None:
            guarded = redis

            async def redis_get() -> bytes | str | None:
                return await guarded.run(lambda r: r.get(guarded.keys.rollout_config))

            self.watcher.redis_get = redis_get
        self.watcher.start()

    async def close(self) -> None:
        await self.watcher.close()

    # -- the config ----------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {**self.watcher.status(), "config": self.config.model_dump(mode="json")}

    async def apply(self, text: str, fmt: Format = "json") -> dict[str, Any]:
        """Validate, build and apply ``text``: through Redis (every replica) when configured, else here.
        Raises :class:`~rag.rollout.config.ConfigError` (the serving config stays)."""
        self.watcher.validate(text, fmt)  # refuse before anything is written
        if self._redis is not None:
            key = self._redis.keys.rollout_config
            await self._redis.run(lambda r: r.set(key, text))
            await self.watcher.check_now()
        else:
            self.watcher.apply_text(text, fmt, source="admin")
        metrics.CONFIG_RELOADS.labels("applied").inc()
        return self.status()

    # -- auto-fallback -------------------------------------------------------------------------------
    def fallback_status(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [row for row in self.fallback.all_status() if tenant is None or row["tenant"] == tenant]

    def reset_fallback(self, tenant: str | None = None, flag: str | None = None) -> int:
        """Put tripped candidate paths back in service (all, a tenant's, a flag's, or one key)."""
        if tenant is None and flag is None:
            return self.fallback.reset_all()
        keys = [
            k
            for k in self.fallback.tracked_keys()
            if (tenant is None or k[0] == tenant) and (flag is None or k[1] == flag)
        ]
        return sum(self.fallback.reset(k) for k in keys)


def _serving(policy: RoutingPolicy) -> None:
    metrics.ROLLOUT_CONFIG.clear()
    metrics.ROLLOUT_CONFIG.labels(policy.version).set(1)


def _reloaded(policy: RoutingPolicy) -> None:
    _serving(policy)
    metrics.CONFIG_RELOADS.labels("reloaded").inc()
