"""Single-flight: concurrent identical misses run the work once; the others wait for its result.

The work runs as its own task, so a caller that goes away (a cancelled request) does not cancel it for
the others; it is cancelled only when every caller waiting on it has gone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class _Flight(Generic[T]):
    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    async def do(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``(result, shared)``: ``shared`` is True for callers that joined a flight already running."""
        flight = self._flights.get(key)
        shared = flight is not None
        if flight is None:

            async def run() -> T:
                return await work()

            new = flight = self._flights[key] = _Flight(asyncio.ensure_future(run()))

            def land(_: asyncio.Task[T]) -> None:
                if self._flights.get(key) is new:
                    del self._flights[key]

            flight.task.add_done_callback(land)
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), shared
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                flight.task.cancel()  # nobody is waiting any more
