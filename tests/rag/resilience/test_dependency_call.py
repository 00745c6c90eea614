"""Breakers judge the dependency, not the queue in front of it (rag.resilience.dependency_call): queue
wait is not service time; a timeout while queued behind a dependency that is making progress counts
nothing; behind one that is stuck it counts; a caller that times out while its call runs has the call
judged when it ends, by the call's own time."""

from __future__ import annotations

import asyncio

import pytest

from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.dependency_call import CallTicket, QueueTimeout, service_s

pytestmark = pytest.mark.anyio

SLOW_S = 0.05


class Queue:
    """A queue whose call in flight has run ``busy`` seconds."""

    name = "embed"

    def __init__(self, busy: float) -> None:
        self.busy = busy

    def busy_s(self) -> float:
        return self.busy


def breaker() -> Breaker:
    return Breaker("embedder", BreakerPolicy(min_calls=1, window_calls=10, slow_call_s=SLOW_S, slow_rate=1.0))


async def never() -> None:
    await asyncio.Event().wait()


async def test_a_timeout_while_queued_behind_a_busy_but_healthy_model_counts_nothing() -> None:
    b, ticket = breaker(), CallTicket()
    ticket.enqueued(Queue(busy=SLOW_S / 2))
    with pytest.raises(QueueTimeout, match="embed queue"):
        await b.call(never, timeout_s=0.01, ticket=ticket)
    assert b.snapshot()["calls_in_window"] == 0 and b.state.value == "closed"


async def test_a_timeout_while_queued_behind_a_stuck_model_counts_against_it() -> None:
    b, ticket = breaker(), CallTicket()
    ticket.enqueued(Queue(busy=SLOW_S * 10))
    with pytest.raises(TimeoutError) as raised:
        await b.call(never, timeout_s=0.01, ticket=ticket)
    assert not isinstance(raised.value, QueueTimeout)
    assert b.state.value == "open"  # one slow failure, min_calls=1


@pytest.mark.parametrize(("took_s", "opens"), [(SLOW_S / 10, False), (SLOW_S * 10, True)])
async def test_a_call_whose_caller_timed_out_is_judged_by_its_own_time_when_it_ends(
    took_s: float, opens: bool
) -> None:
    b, ticket = breaker(), CallTicket()
    ticket.enqueued(Queue(busy=0.0))
    ticket.dispatched()
    with pytest.raises(TimeoutError):
        await b.call(never, timeout_s=0.01, ticket=ticket)
    assert b.snapshot()["calls_in_window"] == 0  # not judged yet: the call still runs
    ticket.call_done(took_s, failed=False)  # the queue reports the end of the call (from its thread)
    await asyncio.sleep(0)  # the judgement runs on the loop
    assert b.snapshot()["calls_in_window"] == 1
    assert (b.state.value == "open") is opens


async def test_queue_wait_is_not_service_time() -> None:
    b, ticket = breaker(), CallTicket()

    async def queued_then_quick() -> str:
        ticket.enqueued(Queue(busy=0.0))
        await asyncio.sleep(SLOW_S * 2)  # waits in the queue longer than the slow-call bound
        ticket.dispatched()
        ticket.call_done(SLOW_S / 10, failed=False)  # the call itself was quick
        return "ok"

    assert await b.call(queued_then_quick, ticket=ticket) == "ok"
    assert b.snapshot()["slow_rate"] == 0.0
    assert service_s(SLOW_S * 3, ticket) == pytest.approx(SLOW_S / 10)


def test_without_a_measured_call_service_time_is_elapsed_less_queue_wait() -> None:
    ticket = CallTicket()
    assert service_s(0.2, None) == 0.2
    assert service_s(0.2, ticket) == 0.2  # never queued
    ticket.queued_at, ticket.dispatched_at = 10.0, 10.15
    assert service_s(0.2, ticket) == pytest.approx(0.05)
