"""How late the event loop runs: the time a coroutine whose work is done waits before it runs again.

Every step of a request ends with its coroutine back on the event loop. When the loop is saturated
(hundreds of requests in flight, each parsing, routing, encoding on the one loop thread), a finished model
call or BM25 job waits in the loop's ready queue before its request moves on — time that counts against
the deadline like any queue. :class:`LoopLag` measures it the simplest way: a task asks to sleep
``interval_s`` and records how much later than that it woke. Admission control adds the running estimate to
every step's queue wait (:meth:`rag.service.batching.BatchedCompute.queue_estimate`), so that under a
saturated loop optional model work (which also takes CPU from the loop) is shed first, and BM25, the floor,
still fits.
"""

from __future__ import annotations

import asyncio
import statistics
from collections import deque

from rag.metrics import LOOP_LAG
from rag.resilience.background import cancel_and_wait


class LoopLag:
    """The event loop's sustained lag (seconds): the median of the last ``window`` wake-ups, one every
    ``interval_s``. A median, so that one stall (a start-up step, an index switch) does not shed the
    model work of the queries right after it; saturation makes every wake-up late."""

    def __init__(self, *, interval_s: float = 0.02, window: int = 5) -> None:
        self.interval_s = interval_s
        self._late: deque[float] = deque(maxlen=window)
        self._lag_s = 0.0
        self._task: asyncio.Task[None] | None = None

    def lag_s(self) -> float:
        return self._lag_s

    def observe(self, late_s: float) -> None:
        """One wake-up ``late_s`` seconds after it was due."""
        self._late.append(max(late_s, 0.0))
        self._lag_s = statistics.median(self._late)
        LOOP_LAG.set(self._lag_s)

    def start(self) -> None:
        """Start measuring (on the running loop; once)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rag-loop-lag")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.interval_s
            await asyncio.sleep(self.interval_s)
            self.observe(loop.time() - due)

    async def close(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)
            self._task = None
