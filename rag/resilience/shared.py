"""Breaker state shared between the replicas of a deployment through Redis.

When a breaker opens here, the replica writes its key (:meth:`rag.resilience.redis.RedisKeys.breaker`:
who opened it, when, why) with a TTL of the open period; when one closes here, it deletes the key. Every
``interval_s`` each replica reads the keys and opens its own closed breakers that another replica opened,
for what is left of that open period; after it, each replica probes for itself. The Redis breaker is never
shared (its state cannot travel through Redis), and a Redis failure only means the replicas decide alone
for a while.

Values read from Redis are not trusted: one that does not parse as an open record (:func:`parse_open`) is
logged, counted in ``rag_background_errors_total{loop="breaker_sync"}`` and skipped — the other breakers
are still synced and the loop goes on (:mod:`rag.resilience.background`). A record whose open period is
already over (a key written without its TTL) opens nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from dataclasses import dataclass

from rag.resilience.background import LoopErrors, cancel_and_wait, run_every
from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import Breaker, State
from rag.resilience.redis import GuardedRedis, RedisUnavailable

log = logging.getLogger(__name__)
LOOP = "breaker_sync"
MAX_TEXT = 200  # characters of another replica's name and reason that are kept


@dataclass(frozen=True, slots=True)
class SharedOpen:
    """Another replica's record of an open breaker."""

    by: str
    opened_at: float  # its clock time (seconds since the epoch)
    reason: str


def parse_open(raw: bytes | str) -> SharedOpen:
    """The record in a breaker key's value; ValueError naming what is wrong."""
    try:
        info = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError included; nesting too deep
        raise ValueError(f"not JSON ({exc})") from None
    if not isinstance(info, dict):
        raise ValueError(f"must be a JSON object, got {type(info).__name__}")
    by, opened_at, reason = info.get("by"), info.get("opened_at"), info.get("reason", "")
    if not isinstance(by, str) or not by:
        raise ValueError(f"'by' must be a non-empty string, got {by!r}"[:300])
    if isinstance(opened_at, bool) or not isinstance(opened_at, int | float) or not math.isfinite(opened_at):
        raise ValueError(f"'opened_at' must be a finite number, got {opened_at!r}"[:300])
    if not isinstance(reason, str):
        raise ValueError(f"'reason' must be a string, got {type(reason).__name__}")
    return SharedOpen(by[:MAX_TEXT], float(opened_at), reason[:MAX_TEXT])


class SharedBreakerState:
    def __init__(self, board: BreakerBoard, redis: GuardedRedis, replica: str, *, interval_s: float) -> None:
        self.board = board
        self.redis = redis
        self.replica = replica
        self.interval_s = interval_s
        self.shared = [name for name in board if name != "redis"]
        self._applying = False
        self.errors = LoopErrors(LOOP)
        self._pending: set[asyncio.Task[None]] = set()
        self._task: asyncio.Task[None] | None = None
        for name in self.shared:
            board[name].add_listener(self._on_transition)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="rag-breaker-sync")

    async def close(self) -> None:
        for task in [t for t in (self._task, *self._pending) if t is not None]:
            await cancel_and_wait(task)

    def _on_transition(self, breaker: Breaker, old: State, new: State, reason: str) -> None:
        if self._applying or new is State.HALF_OPEN:
            return
        task = asyncio.get_running_loop().create_task(self._publish(breaker, new, reason))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, breaker: Breaker, state: State, reason: str) -> None:
        key = self.redis.keys.breaker(breaker.name)
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
        """Open the breakers that other replicas opened (and that are closed here); a malformed value is
        skipped (logged, counted), the others are still applied."""
        keys = [self.redis.keys.breaker(name) for name in self.shared]
        values = await self.redis.run(lambda r: r.mget(keys))
        now = time.time()
        for name, key, raw in zip(self.shared, keys, values, strict=True):
            breaker = self.board[name]
            if raw is None or breaker.state is not State.CLOSED:
                continue
            try:
                record = parse_open(raw)
            except ValueError as exc:
                self.errors.skip(key, str(exc))
                continue
            self.errors.clear(key)
            opened_ago_s = max(now - record.opened_at, 0.0)  # a clock ahead of ours: opened just now
            if record.by == self.replica or opened_ago_s >= breaker.policy.open_s:
                continue
            self._applying = True
            try:
                breaker.force(
                    State.OPEN, f"opened by replica {record.by}: {record.reason}", opened_ago_s=opened_ago_s
                )
            finally:
                self._applying = False

    async def _loop(self) -> None:
        await run_every(self.interval_s, self.sync_once, self.errors, quiet=(RedisUnavailable,))
