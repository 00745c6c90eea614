"""Budget spend shared between replicas through Redis.

Each replica adds what it spends to its own window at once (budgets react to its own traffic without a
round trip) and, every ``interval_s``, pushes the spend added since the last push to per-minute counters
(:meth:`rag.resilience.redis.RedisKeys.spend`: INCRBYFLOAT, a TTL of two hours), then reads the last
hour's counters of the scopes it knows and replaces its window's buckets with the deployment's totals.
A Redis failure only means each replica budgets on its own spend for a while (the unpushed spend is kept
and pushed later).

Counters read from Redis are not trusted: a value that is not a finite number >= 0 (:func:`parse_amount`)
is logged, counted in ``rag_background_errors_total{loop="spend_sync"}`` and skipped — that minute keeps
what this replica knew of it — and the loop goes on (:mod:`rag.resilience.background`). A counter that
refuses an increment (it holds something else) fails that key only: its amount is held back and pushed
once the key is writable again (or its minute is over), and it counts as no Redis failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
from collections import defaultdict
from functools import partial

from rag.resilience.background import LoopErrors, cancel_and_wait, run_every
from rag.resilience.redis import Client, GuardedRedis, RedisUnavailable
from rag.routing.budgets import WINDOW_MINUTES, SpendWindow

log = logging.getLogger(__name__)
TTL_S = 2 * 3600
LOOP = "spend_sync"


async def _mget(keys: list[str], r: Client) -> list[bytes | str | None]:
    return list(await r.mget(keys))


def parse_amount(raw: bytes | str) -> float:
    """The spend in a counter's value; ValueError unless it is a finite number >= 0."""
    try:
        amount = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"not a number: {raw[:40]!r}") from None
    if not (math.isfinite(amount) and amount >= 0):
        raise ValueError(f"spend must be a finite number >= 0, got {amount!r}")
    return amount


class SharedSpend:
    def __init__(self, window: SpendWindow, redis: GuardedRedis, *, interval_s: float = 1.0) -> None:
        self.window = window
        self.redis = redis
        self.interval_s = interval_s
        self._unpushed: defaultdict[tuple[str, int], float] = defaultdict(float)
        self._lock = threading.Lock()
        self.errors = LoopErrors(LOOP)
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
            await cancel_and_wait(self._task)
        with contextlib.suppress(RedisUnavailable):
            await self.sync()  # what this replica spent last is not lost to the others

    async def _loop(self) -> None:
        await run_every(self.interval_s, self.sync, self.errors, quiet=(RedisUnavailable,), sleep_first=True)

    async def sync(self) -> None:
        """Push the unpushed spend, then read the deployment's last hour for every known scope."""
        spend_key = self.redis.keys.spend
        with self._lock:
            pushing, self._unpushed = dict(self._unpushed), defaultdict(float)
        try:
            if pushing:

                async def push(r: Client) -> list[object]:
                    pipe = r.pipeline(transaction=False)
                    for (scope, minute), amount in pushing.items():
                        pipe.incrbyfloat(spend_key(scope, minute), amount)
                        pipe.expire(spend_key(scope, minute), TTL_S)
                    # a key that refuses its increment fails alone (not the call: no breaker failure)
                    return list(await pipe.execute(raise_on_error=False))

                results = await self.redis.run(push)
                self._hold_back_refused(pushing, results[::2])
        except RedisUnavailable:
            with self._lock:  # keep it for the next sync
                for key, amount in pushing.items():
                    self._unpushed[key] += amount
            raise
        now = int(self.window.clock() // 60)
        minutes = list(range(now - WINDOW_MINUTES + 1, now + 1))
        for scope in self.window.scopes():
            values = await self.redis.run(partial(_mget, [spend_key(scope, m) for m in minutes]))
            known = self.window.minute_totals(scope)
            with self._lock:  # spend added here since the push is not in Redis yet: keep it on top
                pending = {m: a for (s, m), a in self._unpushed.items() if s == scope}
            totals: dict[int, float] = {}
            for m, raw in zip(minutes, values, strict=True):
                if raw is None:
                    continue
                try:
                    totals[m] = parse_amount(raw) + pending.get(m, 0.0)
                except ValueError as exc:
                    self.errors.skip(spend_key(scope, m), str(exc))
                    if m in known:  # what this replica knew of that minute (its own spend included)
                        totals[m] = known[m]
            for m, a in pending.items():
                totals.setdefault(m, a)
            self.window.merge(scope, totals)

    def _hold_back_refused(self, pushed: dict[tuple[str, int], float], increments: list[object]) -> None:
        """Put back the amounts whose counter refused the increment (logged, counted): pushed later, while
        their minute is still in the window (bounded: one entry per scope and minute of the window)."""
        oldest = int(self.window.clock() // 60) - WINDOW_MINUTES
        for (key, amount), result in zip(pushed.items(), increments, strict=True):
            if isinstance(result, Exception):
                self.errors.skip(self.redis.keys.spend(*key), f"increment refused: {result}"[:300])
                if key[1] > oldest:
                    with self._lock:
                        self._unpushed[key] += amount
