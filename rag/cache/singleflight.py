"""Single-flight: concurrent identical misses run the work once; the others wait for its result.

The work runs as its own task, so a caller that goes away (a cancelled request) does not cancel it for
the others; it is cancelled only when every caller waiting on it has gone.

Invariant: a flight in the map is never cancelled. The last waiter to leave removes the flight from the
map *in the same step* as it cancels the task (not later, in the task's done callback), and a caller that
still finds a cancelling or cancelled task starts a new flight. So a caller never receives another
caller's cancellation: it gets the work's result, the work's own error, or — if the work was cancelled by
something other than its waiters — :class:`FlightCancelled` (an ordinary error, never a
``CancelledError`` that the caller did not ask for).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from rag.errors import RagError

T = TypeVar("T")


class FlightCancelled(RagError, RuntimeError):
    """The shared work was cancelled although this caller was not (it was not the caller's cancel)."""


class _Flight(Generic[T]):
    def __init__(self, task: asyncio.Task[T]) -> None:
        self.task = task
        self.waiters = 0

    def joinable(self) -> bool:
        return not self.task.cancelled() and not self.task.cancelling()


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._flights: dict[str, _Flight[T]] = {}

    def __len__(self) -> int:
        return len(self._flights)

    def _drop(self, key: str, flight: _Flight[T]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    async def do(self, key: str, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``(result, shared)``: ``shared`` is True for callers that joined a flight already running."""
        flight = self._flights.get(key)
        shared = flight is not None and flight.joinable()
        if flight is None or not shared:

            async def run() -> T:
                return await work()

            new = flight = self._flights[key] = _Flight(asyncio.ensure_future(run()))
            flight.task.add_done_callback(lambda _: self._drop(key, new))
        assert flight is not None
        flight.waiters += 1
        try:
            return await asyncio.shield(flight.task), shared
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if me is not None and me.cancelling():
                raise  # this caller's own cancellation
            raise FlightCancelled("the shared work for this query was cancelled, not its caller") from None
        finally:
            flight.waiters -= 1
            if flight.waiters == 0 and not flight.task.done():
                self._drop(key, flight)  # now, not in the done callback: nobody may join it any more
                flight.task.cancel()  # nobody is waiting any more
