"""A cancellation is never lost: a breaker call cancelled as its work completes ends cancelled (Python
3.11's asyncio.wait_for returned the result instead, and the background loop that made the call kept
running), and closing a background task ends it even if it swallowed a cancellation (a `rag serve` replica
once waited forever in its lifespan shutdown on such a loop)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from rag.resilience.background import cancel_and_wait
from rag.resilience.breaker import Breaker, BreakerPolicy

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_breaker_call_cancelled_as_its_work_completes_ends_cancelled() -> None:
    breaker = Breaker("dep", BreakerPolicy())
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def work() -> int:
        return await done

    task = asyncio.create_task(breaker.call(work, timeout_s=5.0))
    await asyncio.sleep(0)  # the call is now waiting on the work
    done.set_result(1)
    task.cancel()  # in the same turn: the work has its result, the caller is cancelled
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_closing_a_task_that_swallowed_a_cancellation_still_ends_it() -> None:
    swallowed = 0
    ticks = 0

    async def stubborn_loop() -> None:
        nonlocal swallowed, ticks
        while True:
            try:
                await asyncio.sleep(0.01)
                ticks += 1
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # what a lost cancellation looks like from outside: the loop goes on

    task = asyncio.create_task(stubborn_loop())
    await asyncio.sleep(0.03)
    await asyncio.wait_for(cancel_and_wait(task), timeout=5)
    assert task.done() and swallowed == 1
