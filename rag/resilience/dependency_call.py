"""What a breaker times: the dependency's own call, not the queue in front of it.

Under overload a request waits for a model thread or a worker before its call starts. That wait is
*load* — ours, not the dependency's — and must never open a breaker (a busy but healthy embedder would
otherwise be switched off exactly when the service needs it). So every guarded step carries a
:class:`CallTicket` (in a context variable, set by the step runner); the queue it waits in stamps when the
step was queued and when its call was dispatched; the breaker then judges the call by its service time
(elapsed minus queue wait), and a timeout that struck while the step was still queued is not the
dependency's — unless the call it waits behind has run past the slow-call bound (a hung model: the calls
queued behind it must still open its breaker). A timeout that struck while the call was running is judged
when the call ends (the queue reports it, :meth:`CallTicket.call_done`): a healthy batch that outlasted
one request's remaining time is not a slow dependency; a call that ends past the slow-call bound is.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Protocol

from rag.errors import RagError


class WorkQueue(Protocol):
    """A queue in front of a dependency (a model's micro-batcher, the CPU pool)."""

    @property
    def name(self) -> str: ...

    def busy_s(self) -> float:
        """How long the oldest call running now has run (0 when none is)."""
        ...


CallJudge = Callable[[float, bool], None]  # (the call's service seconds, whether it failed)


@dataclass(slots=True)
class CallTicket:
    """One guarded step's passage through a queue: when it was queued, when its call started, and (once
    the queue reports it) how long the call itself took."""

    queue: WorkQueue | None = None
    queued_at: float | None = None
    dispatched_at: float | None = None
    _done: tuple[float, bool] | None = None
    _judge: tuple[CallJudge, asyncio.AbstractEventLoop] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def enqueued(self, queue: WorkQueue) -> None:
        self.queue = queue
        self.queued_at = time.monotonic()

    def dispatched(self) -> None:
        """The call started (stamped by the queue; any thread)."""
        if self.dispatched_at is None:
            self.dispatched_at = time.monotonic()

    def queue_wait_s(self) -> float:
        """Seconds spent queued (until now, while still queued)."""
        if self.queued_at is None:
            return 0.0
        end = self.dispatched_at if self.dispatched_at is not None else time.monotonic()
        return max(end - self.queued_at, 0.0)

    def call_done(self, service_s: float, failed: bool) -> None:
        """The queue reports the end of the call (any thread); a judgement deferred by :meth:`judge_later`
        runs on its event loop."""
        with self._lock:
            if self._done is not None:  # a batch run again member by member: the first call is judged
                return
            self._done = (service_s, failed)
            judge = self._judge
        if judge is not None:
            fn, loop = judge
            loop.call_soon_threadsafe(fn, service_s, failed)

    def measured_s(self) -> float | None:
        """The call's own time, once its queue reported it (:meth:`call_done`)."""
        with self._lock:
            return self._done[0] if self._done is not None else None

    def judge_later(self, fn: CallJudge) -> None:
        """Judge the call when it ends (at once, on this loop, when it has ended already)."""
        loop = asyncio.get_running_loop()
        with self._lock:
            done = self._done
            if done is None:
                self._judge = (fn, loop)
        if done is not None:
            fn(*done)

    @property
    def still_queued(self) -> bool:
        return self.queued_at is not None and self.dispatched_at is None

    def queue_stalled(self, slow_s: float) -> bool:
        """Whether the call this one waits behind has run longer than ``slow_s``: the dependency is
        stuck, not merely busy."""
        return self.queue is not None and self.queue.busy_s() > slow_s


_TICKET: ContextVar[CallTicket | None] = ContextVar("rag_call_ticket", default=None)


def current_ticket() -> CallTicket | None:
    """The ticket of the guarded step running in this context (None outside one)."""
    return _TICKET.get()


@contextmanager
def ticketed() -> Iterator[CallTicket]:
    """A fresh ticket for the guarded step that runs inside."""
    ticket = CallTicket()
    token = _TICKET.set(ticket)
    try:
        yield ticket
    finally:
        _TICKET.reset(token)


def service_s(elapsed_s: float, ticket: CallTicket | None) -> float:
    """A call's own time: as its queue measured it around the call when it did (the waits to be picked
    up and to be resumed on a busy event loop are not the call's), else ``elapsed_s`` less the time it
    waited in a queue."""
    if ticket is None:
        return elapsed_s
    measured = ticket.measured_s()
    if measured is not None:
        return measured
    return max(elapsed_s - ticket.queue_wait_s(), 0.0)


class QueueTimeout(RagError, TimeoutError):
    """A step timed out while still waiting in the queue in front of its dependency, which was making
    progress meanwhile: load, not the dependency's slowness (never counted by a breaker)."""

    def __init__(self, queue: str, waited_s: float) -> None:
        super().__init__(f"waited {waited_s * 1000:.0f} ms in the {queue} queue (load)")
        self.queue = queue
        self.waited_s = waited_s
