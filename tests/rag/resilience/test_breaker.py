"""The breaker's policy: failure *rate* over a sliding window with a minimum of calls, slow calls and
timeouts, one half-open probe while concurrent callers are refused, transitions reported."""

from __future__ import annotations

import asyncio

import pytest

from rag.resilience.breaker import Breaker, BreakerOpen, BreakerPolicy, State

pytestmark = pytest.mark.anyio


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise ConnectionError("down")


def make(clock: FakeClock, **policy: float) -> tuple[Breaker, list[tuple[str, str, str]]]:
    defaults: dict[str, float] = dict(
        failure_rate=0.5, min_calls=4, window_calls=10, window_s=60, open_s=5, slow_call_s=0.5
    )
    breaker = Breaker("dep", BreakerPolicy(**{**defaults, **policy}), clock=clock)  # type: ignore[arg-type]
    transitions: list[tuple[str, str, str]] = []
    breaker.add_listener(lambda b, old, new, reason: transitions.append((old.value, new.value, reason)))
    return breaker, transitions


async def fail(breaker: Breaker) -> None:
    with pytest.raises(ConnectionError):
        await breaker.call(boom)


async def test_opens_on_failure_rate_not_on_consecutive_failures() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock)
    # alternate: never two failures in a row, yet half of the calls fail
    await breaker.call(ok)
    await fail(breaker)
    await breaker.call(ok)
    assert breaker.state is State.CLOSED  # 1 failure in 3 calls, below min_calls
    await fail(breaker)  # 2 of 4 = 50%
    assert breaker.state is State.OPEN
    assert transitions == [("closed", "open", "failure rate 50% >= 50% over 4 calls")]


async def test_below_the_rate_it_stays_closed_however_long_it_runs() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    for i in range(40):  # one failure in four: 25% < 50%
        if i % 4 == 0:
            await fail(breaker)
        else:
            await breaker.call(ok)
    assert breaker.state is State.CLOSED


async def test_minimum_calls_guard_a_cold_window() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, min_calls=4)
    for _ in range(3):
        await fail(breaker)
    assert breaker.state is State.CLOSED  # 100% failures, but only 3 calls
    await fail(breaker)
    assert breaker.state is State.OPEN


async def test_old_outcomes_leave_the_window() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, window_s=10)
    for _ in range(3):
        await fail(breaker)
    clock.now += 11  # those failures are now outside the window
    await fail(breaker)
    assert breaker.state is State.CLOSED


async def test_open_refuses_at_once_without_calling() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    for _ in range(4):
        await fail(breaker)
    called = False

    async def work() -> str:
        nonlocal called
        called = True
        return "x"

    with pytest.raises(BreakerOpen, match=r"is open; next probe in 5\.0 s"):
        await breaker.call(work)
    assert not called


async def test_timeouts_count_as_failures_and_slow_calls() -> None:
    breaker, _ = make(FakeClock(), min_calls=2)

    async def hang() -> str:
        await asyncio.sleep(10)
        return "late"

    for _ in range(2):
        with pytest.raises(TimeoutError):
            await breaker.call(hang, timeout_s=0.01)
    assert breaker.state is State.OPEN
    assert "failure rate 100%" in breaker.last_reason


async def test_slow_successes_open_it_on_the_slow_rate() -> None:
    clock = FakeClock()
    breaker, _ = make(clock, slow_rate=0.75, slow_call_s=0.5)

    async def slow() -> str:
        clock.now += 0.6  # the call takes 600 ms of the breaker's clock
        return "ok"

    for _ in range(3):
        await breaker.call(slow)
    await breaker.call(ok)
    assert breaker.state is State.OPEN  # 3 of 4 slow, no failure at all
    assert breaker.last_reason.startswith("slow-call rate 75%")


async def test_half_open_lets_exactly_one_probe_through() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock)
    for _ in range(4):
        await fail(breaker)
    clock.now += 5
    release = asyncio.Event()
    probes = 0

    async def probe() -> str:
        nonlocal probes
        probes += 1
        await release.wait()
        return "ok"

    first = asyncio.create_task(breaker.call(probe))
    await asyncio.sleep(0)
    assert breaker.state is State.HALF_OPEN
    others = await asyncio.gather(*(breaker.call(probe) for _ in range(20)), return_exceptions=True)
    assert all(isinstance(o, BreakerOpen) and "probe in flight" in str(o) for o in others)
    release.set()
    assert await first == "ok"
    assert probes == 1
    assert breaker.state is State.CLOSED
    assert [t[:2] for t in transitions] == [
        ("closed", "open"),
        ("open", "half-open"),
        ("half-open", "closed"),
    ]


async def test_a_failed_probe_opens_it_again_never_closes_it() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock)
    for _ in range(4):
        await fail(breaker)
    clock.now += 5
    await fail(breaker)  # the probe
    assert breaker.state is State.OPEN
    assert transitions[-1] == ("half-open", "open", "probe failed: ConnectionError")
    assert breaker.retry_in_s() == pytest.approx(5.0)  # a fresh open period
    clock.now += 5
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_a_slow_probe_opens_it_again() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    for _ in range(4):
        await fail(breaker)
    clock.now += 5

    async def slow() -> str:
        clock.now += 1.0
        return "ok"

    assert await breaker.call(slow) == "ok"  # the caller gets its answer; the breaker distrusts it
    assert breaker.state is State.OPEN


async def test_a_cancelled_probe_hands_the_probe_to_the_next_caller() -> None:
    clock = FakeClock()
    breaker, _ = make(clock)
    for _ in range(4):
        await fail(breaker)
    clock.now += 5
    task = asyncio.create_task(breaker.call(lambda: asyncio.sleep(10)))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.state is State.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert breaker.state is State.CLOSED


async def test_force_applies_a_state_decided_elsewhere() -> None:
    clock = FakeClock()
    breaker, transitions = make(clock)
    breaker.force(State.OPEN, "opened by replica b", opened_ago_s=2.0)
    assert breaker.retry_in_s() == pytest.approx(3.0)
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)
    assert transitions == [("closed", "open", "opened by replica b")]


def test_policy_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="failure_rate must be in"):
        BreakerPolicy(failure_rate=0)
    with pytest.raises(ValueError, match="min_calls <= window_calls"):
        BreakerPolicy(min_calls=30, window_calls=20)
