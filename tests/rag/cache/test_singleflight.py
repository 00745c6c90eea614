"""Single-flight: a cancelled flight is never joined; a joiner gets a fresh result, never CancelledError.

The races are ordered with events, not sleeps: each test drives the event loop to the exact interleaving.
"""

from __future__ import annotations

import asyncio

import pytest

from rag.cache.singleflight import SingleFlight

pytestmark = pytest.mark.anyio


class Work:
    """A flight body: the first call blocks until cancelled (and cleans up with one more await, as the
    pipeline does); later calls return at once. Each returns its call number."""

    def __init__(self) -> None:
        self.calls = 0
        self.started = asyncio.Event()
        self.cleaning_up = asyncio.Event()
        self.finish_cleanup = asyncio.Event()

    async def __call__(self) -> int:
        self.calls += 1
        n = self.calls
        if n == 1:
            self.started.set()
            try:
                await asyncio.Event().wait()  # never set: only a cancel ends it
            except asyncio.CancelledError:
                self.cleaning_up.set()
                await self.finish_cleanup.wait()  # still "cancelling", not done
                raise
        return n


async def join(flights: SingleFlight[int], work: Work) -> tuple[int, bool]:
    """``flights.do`` for a caller that is not cancelled: a CancelledError here is another's."""
    try:
        return await flights.do("k", work)
    except asyncio.CancelledError:
        pytest.fail("the joiner received the cancelled flight's CancelledError")


async def test_a_joiner_after_the_last_waiter_left_gets_a_fresh_result() -> None:
    flights: SingleFlight[int] = SingleFlight()
    work = Work()
    first = asyncio.create_task(flights.do("k", work))
    await work.started.wait()
    first.cancel()  # the only waiter leaves (a client disconnected): the flight is cancelled
    with pytest.raises(asyncio.CancelledError):
        await first
    await work.cleaning_up.wait()  # the cancelled flight has not finished yet
    joiner = asyncio.create_task(join(flights, work))  # the same query arriving at once
    await asyncio.sleep(0)  # one loop turn: the joiner has chosen its flight
    work.finish_cleanup.set()  # now the cancelled flight ends
    result, shared = await joiner
    assert (result, shared) == (2, False)
    assert work.calls == 2


async def test_a_joiner_right_after_the_cancel_never_sees_cancelled_error() -> None:
    """The tightest interleaving: the joiner runs in the same loop iteration as the cancel, before the
    cancelled flight's done callback could have removed it."""
    flights: SingleFlight[int] = SingleFlight()
    work = Work()
    work.finish_cleanup.set()  # the cancelled flight ends as soon as it runs
    first = asyncio.create_task(flights.do("k", work))
    await work.started.wait()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    result, shared = await join(flights, work)
    assert (result, shared) == (2, False)


async def test_a_flight_still_waited_on_is_not_cancelled_when_one_waiter_leaves() -> None:
    flights: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()
    calls = 0

    async def work() -> int:
        nonlocal calls
        calls += 1
        await release.wait()
        return 7

    first = asyncio.create_task(flights.do("k", work))
    second = asyncio.create_task(flights.do("k", work))
    await asyncio.sleep(0)  # both have joined (one loop turn; no timing involved)
    assert len(flights) == 1
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    release.set()
    assert await second == (7, True)
    assert calls == 1 and len(flights) == 0


async def test_a_flight_cancelled_from_elsewhere_fails_its_waiters_with_an_error_not_a_cancel() -> None:
    """A CancelledError that is not the waiter's own cancellation must not escape as one (it would end the
    request as a plain-text 500): it becomes :class:`FlightCancelled`, a RuntimeError."""
    from rag.cache.singleflight import FlightCancelled

    flights: SingleFlight[int] = SingleFlight()
    inner: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> int:
        return await inner

    waiter = asyncio.create_task(flights.do("k", work))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    inner.cancel()  # something inside the work was cancelled, the waiter was not
    with pytest.raises(FlightCancelled):
        await waiter
