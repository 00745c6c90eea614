"""Breaker state shared between replicas through Redis.

When a breaker opens here, the replica writes ``rag:breaker:<name>`` (who opened it, when, why) with a
TTL of the open period; when one closes here, it deletes the key. Every ``interval_s`` each replica reads
the keys and opens its own closed breakers that another replica opened, for what is left of that open
period; after it, each replica probes for itself. The Redis breaker is never shared (its state cannot
travel through Redis), and a Redis failure only means the replicas decide alone for a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import Breaker, State
from rag.resilience.guarded_redis import GuardedRedis, RedisUnavailable

log = logging.getLogger(__name__)
PREFIX = "rag:breaker:"


class SharedBreakerState:
    def __init__(self, board: BreakerBoard, redis: GuardedRedis, replica: str, *, interval_s: float) -> None:
        self.board = board
        self.redis = redis
        self.replica = replica
        self.interval_s = interval_s
        self.shared = [name for name in board if name != "redis"]
        self._applying = False
        self._pending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        for name in self.shared:
            board[name].add_listener(self._on_transition)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rag-breaker-sync")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._pending) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _on_transition(self, breaker: Breaker, old: State, new: State, reason: str) -> None:
        if self._applying or new is State.HALF_OPEN:
            return
        task = asyncio.get_running_loop().create_task(self._publish(breaker, new, reason))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, breaker: Breaker, state: State, reason: str) -> None:
        key = PREFIX + breaker.name
        try:
            if state is State.OPEN:
                value = json.dumps({"by": self.replica, "opened_at": time.time(), "reason": reason})
                ttl_ms = max(int(breaker.policy.open_s * 1000), 1)
                await self.redis.run(lambda r: r.set(key, value, px=ttl_ms))
            else:
                await self.redis.run(lambda r: r.delete(key))
        except RedisUnavailable as exc:
            log.info("breaker %s: state not shared (%s)", breaker.name, exc)

    async def sync_once(self) -> None:
        """Open the breakers that other replicas opened (and that are closed here)."""
        keys = [PREFIX + name for name in self.shared]
        values = await self.redis.run(lambda r: r.mget(keys))
        now = time.time()
        for name, raw in zip(self.shared, values, strict=True):
            breaker = self.board[name]
            if raw is None or breaker.state is not State.CLOSED:
                continue
            info = json.loads(raw)
            if info.get("by") == self.replica:
                continue
            self._applying = True
            try:
                breaker.force(
                    State.OPEN,
                    f"opened by replica {info.get('by')}: {info.get('reason', '')}",
                    opened_ago_s=now - float(info.get("opened_at", now)),
                )
            finally:
                self._applying = False

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(RedisUnavailable):
                await self.sync_once()
            await asyncio.sleep(self.interval_s)
