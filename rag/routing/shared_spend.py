"""Budget spend shared between replicas through Redis.

Each replica adds what it spends to its own window at once (budgets react to its own traffic without a
round trip) and, every ``interval_s``, pushes the spend added since the last push to per-minute counters
``rag:spend:<scope>:<minute>`` (INCRBYFLOAT, a TTL of two hours), then reads the last hour's counters of
the scopes it knows and replaces its window's buckets with the deployment's totals. A Redis failure only
means each replica budgets on its own spend for a while (the unpushed spend is kept and pushed later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import defaultdict
from functools import partial

from redis.asyncio import Redis

from rag.resilience.guarded_redis import GuardedRedis, RedisUnavailable
from rag.routing.budgets import WINDOW_MINUTES, SpendWindow

log = logging.getLogger(__name__)
PREFIX = "rag:spend:"
TTL_S = 2 * 3600


def spend_key(scope: str, minute: int) -> str:
    return f"{PREFIX}{scope}:{minute}"


async def _mget(keys: list[str], r: Redis) -> list[bytes | str | None]:
    return list(await r.mget(keys))


class SharedSpend:
    def __init__(self, window: SpendWindow, redis: GuardedRedis, *, interval_s: float = 1.0) -> None:
        self.window = window
        self.redis = redis
        self.interval_s = interval_s
        self._unpushed: defaultdict[tuple[str, int], float] = defaultdict(float)
        self._lock = threading.Lock()
        self._task: asyncio.Task[None] | None = None

    def add(self, scope: str, amount: float) -> None:
        """Record spend here now, and queue it for the shared counters."""
        if amount <= 0:
            return
        self.window.add(scope, amount)
        with self._lock:
            self._unpushed[(scope, int(self.window.clock() // 60))] += amount

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rag-spend-sync")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(RedisUnavailable):
            await self.sync()  # what this replica spent last is not lost to the others

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sync()
            except RedisUnavailable as exc:
                log.debug("spend sync skipped: %s", exc)

    async def sync(self) -> None:
        """Push the unpushed spend, then read the deployment's last hour for every known scope."""
        with self._lock:
            pushing, self._unpushed = dict(self._unpushed), defaultdict(float)
        try:
            if pushing:

                async def push(r: Redis) -> list[object]:
                    pipe = r.pipeline(transaction=False)
                    for (scope, minute), amount in pushing.items():
                        pipe.incrbyfloat(spend_key(scope, minute), amount)
                        pipe.expire(spend_key(scope, minute), TTL_S)
                    return await pipe.execute()

                await self.redis.run(push)
        except RedisUnavailable:
            with self._lock:  # keep it for the next sync
                for key, amount in pushing.items():
                    self._unpushed[key] += amount
            raise
        now = int(self.window.clock() // 60)
        minutes = list(range(now - WINDOW_MINUTES + 1, now + 1))
        for scope in self.window.scopes():
            values = await self.redis.run(partial(_mget, [spend_key(scope, m) for m in minutes]))
            with self._lock:  # spend added here since the push is not in Redis yet: keep it on top
                pending = {m: a for (s, m), a in self._unpushed.items() if s == scope}
            totals = {m: float(v) + pending.get(m, 0.0) for m, v in zip(minutes, values, strict=True) if v}
            for m, a in pending.items():
                totals.setdefault(m, a)
            self.window.merge(scope, totals)
