"""Circuit breakers for asyncio, on pybreaker's state machine.

pybreaker (the requested library) holds each breaker's state and tells its listeners about every
transition; it does not decide them here. Its own call paths do not fit an asyncio service: ``call_async``
needs tornado, plain ``call()`` on an ``async def`` counts nothing (the coroutine is returned, not run),
it opens on *consecutive* failures only, and a failed half-open trial can still close it. So the policy is
ours, in :class:`Breaker`:

- **closed**: every call's outcome goes into a sliding window (the last ``window_calls`` calls, none older
  than ``window_s``). Once the window holds ``min_calls`` calls, the breaker opens when the share of
  failures reaches ``failure_rate`` or the share of slow calls (longer than ``slow_call_s``, timeouts
  included) reaches ``slow_rate``.
- **open**: calls are refused at once with :class:`BreakerOpen` for ``open_s``.
- **half-open**: exactly one caller (the probe) goes through; everyone else is refused at once while it
  runs. A probe that succeeds in time closes the breaker; one that fails or is slow opens it again. A
  cancelled probe leaves it half-open for the next caller.

Transitions are reported to listeners (metrics, the shared state in Redis); :meth:`Breaker.force` applies
a state decided elsewhere (an operator, or another replica through :mod:`rag.resilience.shared`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

import pybreaker

from rag.errors import RagError
from rag.resilience.dependency_call import CallTicket, QueueTimeout, service_s

T = TypeVar("T")


class State(StrEnum):
    CLOSED = pybreaker.STATE_CLOSED
    OPEN = pybreaker.STATE_OPEN
    HALF_OPEN = pybreaker.STATE_HALF_OPEN


class BreakerOpen(RagError, RuntimeError):
    """Refused without calling the dependency: the breaker is open, or half-open with its probe out."""

    def __init__(self, name: str, state: State, retry_in_s: float) -> None:
        what = "half-open, probe in flight" if state is State.HALF_OPEN else "open"
        super().__init__(f"breaker {name!r} is {what}; next probe in {max(retry_in_s, 0.0):.1f} s")
        self.name = name
        self.state = state
        self.retry_in_s = retry_in_s


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    failure_rate: float = 0.5  # share of failed calls in the window that opens the breaker
    slow_rate: float = 0.8  # share of slow calls (timeouts included) that opens it
    slow_call_s: float = 1.0  # a call longer than this is slow
    window_calls: int = 20
    window_s: float = 30.0
    min_calls: int = 5  # fewer calls in the window never open it
    open_s: float = 5.0  # how long it stays open before a probe

    def __post_init__(self) -> None:
        for name in ("failure_rate", "slow_rate"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if self.min_calls < 1 or self.window_calls < self.min_calls:
            raise ValueError(
                f"need 1 <= min_calls <= window_calls, got min_calls={self.min_calls}, "
                f"window_calls={self.window_calls}"
            )
        for name in ("slow_call_s", "window_s", "open_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class Outcome:
    at: float
    failed: bool
    slow: bool


def window_rates(outcomes: deque[Outcome]) -> tuple[float, float]:
    """(failure rate, slow rate) of a window; (0, 0) when empty."""
    n = len(outcomes)
    if n == 0:
        return 0.0, 0.0
    return sum(o.failed for o in outcomes) / n, sum(o.slow for o in outcomes) / n


def should_open(outcomes: deque[Outcome], policy: BreakerPolicy) -> str | None:
    """Why the window opens the breaker (``failure rate 60% >= 50% over 10 calls``), or None."""
    if len(outcomes) < policy.min_calls:
        return None
    failures, slow = window_rates(outcomes)
    if failures >= policy.failure_rate:
        return f"failure rate {failures:.0%} >= {policy.failure_rate:.0%} over {len(outcomes)} calls"
    if slow >= policy.slow_rate:
        return f"slow-call rate {slow:.0%} >= {policy.slow_rate:.0%} over {len(outcomes)} calls"
    return None


TransitionListener = Callable[["Breaker", State, State, str], None]


class Breaker:
    """One dependency's breaker. ``call`` runs a coroutine through it; ``timeout_s`` bounds the wait."""

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] = lambda exc: True,
    ) -> None:
        self.name = name
        self.policy = policy or BreakerPolicy()
        self._clock = clock
        self._is_failure = is_failure
        self._cb = pybreaker.CircuitBreaker(name=name, reset_timeout=self.policy.open_s)
        self._window: deque[Outcome] = deque(maxlen=self.policy.window_calls)
        self._opened_at = 0.0
        self._probe_out = False
        self._listeners: list[TransitionListener] = []
        self.last_reason = ""

    # -- state ---------------------------------------------------------------------------------------
    @property
    def state(self) -> State:
        return State(self._cb.current_state)

    def add_listener(self, listener: TransitionListener) -> None:
        self._listeners.append(listener)

    def _transition(self, new: State, reason: str) -> None:
        old = self.state
        if new is old:
            return
        if new is State.OPEN:
            self._cb.open()
            self._opened_at = self._clock()
        elif new is State.HALF_OPEN:
            self._cb.half_open()
        else:
            self._cb.close()
            self._window.clear()
        self.last_reason = reason
        for listener in self._listeners:
            listener(self, old, new, reason)

    def force(self, state: State, reason: str, *, opened_ago_s: float = 0.0) -> None:
        """Apply a state decided elsewhere (an operator; another replica, whose breaker opened
        ``opened_ago_s`` seconds ago)."""
        self._probe_out = False
        self._transition(state, reason)
        if state is State.OPEN:
            self._opened_at = self._clock() - max(opened_ago_s, 0.0)

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through (0 when not open)."""
        if self.state is not State.OPEN:
            return 0.0
        return self._opened_at + self.policy.open_s - self._clock()

    def snapshot(self) -> dict[str, Any]:
        failures, slow = window_rates(self._window)
        return {
            "name": self.name,
            "state": self.state.value,
            "calls_in_window": len(self._window),
            "failure_rate": round(failures, 4),
            "slow_rate": round(slow, 4),
            "retry_in_s": round(max(self.retry_in_s(), 0.0), 3),
            "reason": self.last_reason,
        }

    # -- calls ---------------------------------------------------------------------------------------
    def _admit(self) -> bool:
        """Let a call through (True if it is the half-open probe) or raise :class:`BreakerOpen`."""
        state = self.state
        if state is State.OPEN:
            if self.retry_in_s() > 0:
                raise BreakerOpen(self.name, state, self.retry_in_s())
            self._transition(State.HALF_OPEN, f"{self.policy.open_s:g} s open elapsed; probing")
            state = State.HALF_OPEN
        if state is State.HALF_OPEN:
            if self._probe_out:
                raise BreakerOpen(self.name, state, 0.0)
            self._probe_out = True
            return True
        return False

    def _record(self, *, probe: bool, failed: bool, slow: bool, what: str) -> None:
        if probe:
            self._probe_out = False
            if self.state is not State.HALF_OPEN:  # forced elsewhere meanwhile
                return
            if failed or slow:
                self._transition(State.OPEN, f"probe {what}")
            else:
                self._transition(State.CLOSED, "probe succeeded")
            return
        if self.state is not State.CLOSED:
            return  # a call admitted before the breaker opened: its outcome is history
        now = self._clock()
        self._window.append(Outcome(now, failed, slow))
        while self._window and self._window[0].at < now - self.policy.window_s:
            self._window.popleft()
        reason = should_open(self._window, self.policy)
        if reason is not None:
            self._transition(State.OPEN, reason)

    def _judge(self, probe: bool, service_s: float, failed: bool) -> None:
        """The outcome of a call whose caller timed out while it ran, once the call ended."""
        slow = service_s > self.policy.slow_call_s
        what = "failed" if failed else "was slow"
        self._record(probe=probe, failed=failed or slow, slow=slow, what=f"{what} (its caller timed out)")

    async def call(
        self,
        work: Callable[[], Awaitable[T]],
        *,
        timeout_s: float | None = None,
        ticket: CallTicket | None = None,
    ) -> T:
        """Run ``work()`` through the breaker. Raises :class:`BreakerOpen` without running it when the
        breaker refuses, ``TimeoutError`` after ``timeout_s`` (counted as a failure and a slow call), or
        what ``work`` raised. A cancelled call counts nothing.

        With a ``ticket`` (:mod:`rag.resilience.dependency_call`) the call is judged by its service time,
        not its queue wait; a timeout that strikes while it is still queued behind a dependency that
        is making progress is load: it counts nothing and raises :class:`QueueTimeout`."""
        probe = self._admit()
        start = self._clock()
        try:
            if timeout_s is None:
                result = await work()
            else:
                # asyncio.timeout, not wait_for: in Python 3.11 wait_for loses a cancellation that races
                # the work's completion (tests/rag/resilience/test_cancellation.py)
                async with asyncio.timeout(max(timeout_s, 0.0)):
                    result = await work()
        except asyncio.CancelledError:
            if probe:
                self._probe_out = False
            raise
        except TimeoutError as exc:
            if (
                ticket is not None
                and ticket.still_queued
                and not ticket.queue_stalled(self.policy.slow_call_s)
            ):
                if probe:
                    self._probe_out = False  # it never reached the dependency: the next caller probes
                queue = ticket.queue.name if ticket.queue is not None else "work"
                raise QueueTimeout(queue, ticket.queue_wait_s()) from exc
            if ticket is not None and ticket.dispatched_at is not None and not probe:
                # the call is running: judge it by its own time when it ends, not by this request's
                # (a probe is judged at once: a hung probe must not hold the breaker half-open)
                ticket.judge_later(lambda took_s, failed: self._judge(probe, took_s, failed))
                raise
            self._record(probe=probe, failed=True, slow=True, what="timed out")
            raise
        except Exception as exc:
            failed = self._is_failure(exc)
            slow = service_s(self._clock() - start, ticket) > self.policy.slow_call_s
            self._record(probe=probe, failed=failed, slow=slow, what=f"failed: {type(exc).__name__}")
            raise
        slow = service_s(self._clock() - start, ticket) > self.policy.slow_call_s
        self._record(probe=probe, failed=False, slow=slow, what="was slow")
        return result
