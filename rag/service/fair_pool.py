"""The CPU pool: the pipeline's non-model work (BM25, the vector search, fusion) on a few threads, taken
round-robin across lanes (tenants), so that one tenant's burst queues behind itself, not in front of
everyone else.

A plain thread pool serves its queue first in, first out: a tenant that sends 500 queries at once puts
500 BM25 jobs ahead of another tenant's one, and that one misses its deadline — one tenant pushes another
off the floor. Here each lane has its own FIFO and the workers take one job per lane in turn (the lanes
with work, in the order they last got a turn). A lane with one job waits for at most one job of every
other lane, however deep their queues.

The pool also measures itself, for admission control: :meth:`FairPool.estimate` says how long a new
job of a lane would wait before it starts (its position in the round-robin order, the mean job time, the
number of workers), and :meth:`FairPool.retry_after_s` how long until the backlog has drained.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from rag.metrics import QUEUE_WAIT
from rag.resilience.deadline import ewma
from rag.resilience.dependency_call import CallTicket, current_ticket
from rag.retrieval.compute import QueueEstimate


@dataclass(slots=True)
class _Job:
    fn: Callable[[], Any]
    future: Future[Any]
    ticket: CallTicket | None
    queued_at: float


def jobs_ahead(queued: list[int], own: int) -> int:
    """How many jobs run before a new one in a lane holding ``own`` jobs, when the other lanes hold
    ``queued`` jobs and the workers take one job per lane in turn: the lane's own jobs, and at most
    ``own + 1`` of each other lane's."""
    return own + sum(min(n, own + 1) for n in queued)


def wait_estimate_s(ahead: int, busy: int, workers: int, job_s: float) -> float:
    """Seconds before a new job starts: nothing when a worker is free and no job is ahead; else the jobs
    ahead (and half of each running one) shared among the workers."""
    if ahead == 0 and busy < workers:
        return 0.0
    return (ahead + busy / 2.0) * job_s / workers


class FairPool:
    """``workers`` threads taking jobs round-robin across lanes (see the module docstring)."""

    name = "cpu"

    def __init__(self, workers: int, *, alpha: float = 0.1) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._alpha = alpha
        self._lanes: OrderedDict[str, deque[_Job]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._running: dict[int, float] = {}  # worker thread id -> start of its job
        self._job_s: float | None = None  # running mean of a job's wall time
        self._threads = [
            threading.Thread(target=self._work, name=f"rag-cpu-{i}", daemon=True) for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    def busy_s(self) -> float:
        """How long the oldest job running now has run (0 when none is)."""
        with self._cond:
            oldest = min(self._running.values(), default=None)
        return time.monotonic() - oldest if oldest is not None else 0.0

    def submit(self, lane: str, fn: Callable[[], Any]) -> Future[Any]:
        """Queue ``fn`` in ``lane``; its result (or error) in the returned future. A future cancelled
        before its job starts is skipped."""
        future: Future[Any] = Future()
        ticket = current_ticket()
        if ticket is not None:
            ticket.enqueued(self)
        with self._cond:
            if self._closed:
                raise RuntimeError("the CPU pool is shut down")
            self._lanes.setdefault(lane, deque()).append(_Job(fn, future, ticket, time.monotonic()))
            self._cond.notify()
        return future

    def estimate(self, lane: str) -> QueueEstimate:
        """What the pool adds to a job submitted now in ``lane``: its wait before it starts (its call is
        the job itself, estimated by the step's own cost)."""
        with self._cond:
            own = len(self._lanes.get(lane, ()))
            others = [len(q) for name, q in self._lanes.items() if name != lane]
            busy, job_s = len(self._running), self._job_s or 0.0
        return QueueEstimate(wait_estimate_s(jobs_ahead(others, own), busy, self.workers, job_s))

    def retry_after_s(self) -> int:
        """Whole seconds (at least 1) until the jobs queued now have drained, at the measured job time."""
        with self._cond:
            queued = sum(len(q) for q in self._lanes.values())
            busy, job_s = len(self._running), self._job_s or 0.0
        return max(1, math.ceil(wait_estimate_s(queued, busy, self.workers, job_s)))

    def shutdown(self) -> None:
        """Stop the workers once the jobs running now finish; queued jobs are cancelled."""
        with self._cond:
            self._closed = True
            lanes, self._lanes = self._lanes, OrderedDict()
            self._cond.notify_all()
        for queue in lanes.values():
            for job in queue:
                job.future.cancel()

    # -- workers -------------------------------------------------------------------------------------
    def _next(self) -> _Job | None:
        """The next job, round-robin across lanes (None once shut down)."""
        with self._cond:
            while True:
                if self._closed:
                    return None
                while self._lanes:
                    lane, queue = next(iter(self._lanes.items()))
                    job = queue.popleft()
                    if queue:
                        self._lanes.move_to_end(lane)
                    else:
                        del self._lanes[lane]
                    if job.future.set_running_or_notify_cancel():
                        self._running[threading.get_ident()] = time.monotonic()
                        return job
                self._cond.wait()

    def _work(self) -> None:
        while (job := self._next()) is not None:
            me = threading.get_ident()
            start = self._running[me]
            QUEUE_WAIT.labels(self.name).observe(start - job.queued_at)
            if job.ticket is not None:
                job.ticket.dispatched()
            failed = True
            try:
                result = job.fn()
                failed = False
            except BaseException as exc:  # the caller gets it, as from any executor
                job.future.set_exception(exc)
            else:
                job.future.set_result(result)
            finally:
                elapsed = time.monotonic() - start
                if job.ticket is not None:  # a caller that timed out meanwhile judges this call
                    job.ticket.call_done(elapsed, failed)
                with self._cond:
                    self._running.pop(me, None)
                    self._job_s = ewma(self._job_s, elapsed, self._alpha)
