"""How every step of a run runs: one chokepoint (:meth:`StepRunner.guarded`) where a step gets its
deadline check, its dependency's breaker, its timeout, its timing and event, and — when it fails or does
not fit — its entry in ``degraded``. Haystack's "re-raise with the component's name", applied to
resilience: unguarded (the CLI, evaluation), a failing step raises :class:`StepFailed` naming it.

Owns the record of a run (:class:`SearchOutcome`), the events listeners see (:class:`StepEvent`) and the
guards a run is given (:class:`Guards`); the rungs themselves are :mod:`rag.retrieval.degradation_ladder`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from rag.errors import RagError
from rag.resilience.breaker import Breaker
from rag.resilience.deadline import Deadline, StepCosts
from rag.resilience.dependency_call import CallTicket, QueueTimeout, service_s, ticketed
from rag.retrieval.compute import NO_QUEUE, Compute, QueueEstimate
from rag.retrieval.degradation_ladder import failure_degradation, not_started, shed
from rag.types import Degradation, Hit, ListKey, Step, StepKey

T = TypeVar("T")


@dataclass(slots=True)
class Guards:
    """What makes a run resilient: a deadline split across steps, a breaker per dependency
    (``embedder``, ``qdrant``, ``reranker``) and the running step-cost estimates that decide whether a step
    fits in the time left. Without guards (the CLI, evaluation) a failing step fails the run."""

    deadline: Deadline | None = None
    breakers: Mapping[str, Breaker] = field(default_factory=dict)
    costs: StepCosts | None = None
    reserve_s: float = 0.005  # kept back for fusion and the response
    cpu: Callable[[str, float, int], None] | None = None  # told each CPU step's thread time (cost model)
    lane: str = ""  # whose turn the run's CPU work takes in the shared pool (the tenant)


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A finished step (``retrieve.bm25``, ``embed``, ``rerank``, …), its wall time and details."""

    step: StepKey
    ms: float
    detail: dict[str, Any] = field(default_factory=dict)


StepListener = Callable[[StepEvent], None]


@dataclass(slots=True)
class SearchOutcome:
    """What a run did: its hits, each step's wall time, the work done in model units, and what it gave
    up (``degraded``)."""

    hits: list[Hit]
    timings: dict[StepKey, float] = field(default_factory=dict)  # wall ms of each step that ran, in order
    rerank_pairs: int = 0
    embedded_texts: int = 0
    degraded: list[Degradation] = field(default_factory=list)
    rerank_gate: dict[str, Any] | None = None  # the adaptive-depth decision, when the plan has a gate
    # what the evidence of each result is read from (rag.retrieval.explain): the lists fused, by name
    # (references, not copies), and the fusion's ranking (None when one list stood alone)
    lists: dict[ListKey, list[Hit]] = field(default_factory=dict)
    fused: list[Hit] | None = None

    @property
    def timings_ms(self) -> dict[str, float]:
        """``timings`` by wire name (``retrieve.bm25.q1``)."""
        return {str(step): ms for step, ms in self.timings.items()}


class StepFailed(RagError, RuntimeError):
    """A pipeline step failed; ``step`` names it."""

    def __init__(self, step: StepKey, cause: BaseException) -> None:
        super().__init__(f"step {str(step)!r} failed: {cause}")
        self.step = step


class StepRunner:
    """Runs the steps of one run under its guards (or none), writing into its outcome. ``queues`` (the
    run's :class:`~rag.retrieval.compute.Compute`) tells how long a step would wait before its call
    starts: admission control."""

    def __init__(
        self,
        outcome: SearchOutcome,
        guards: Guards | None,
        on_step: StepListener | None,
        queues: Compute | None = None,
    ) -> None:
        self.outcome = outcome
        self.guards = guards
        self.on_step = on_step
        self.queues = queues

    def queue_estimate(self, step: Step, units: int = 1) -> QueueEstimate:
        """What the queue in front of ``step`` would add if it started now (nothing without queues)."""
        if self.queues is None:
            return NO_QUEUE
        return self.queues.queue_estimate(step, self.guards.lane if self.guards is not None else "", units)

    async def guarded(
        self,
        step: StepKey,
        work: Callable[[], Awaitable[T]],
        *,
        units: int = 1,
        cost_key: str | None = None,
        reserve_after_s: float = 0.0,
        grace_s: float = 0.0,
        **detail: Any,
    ) -> T | None:
        """Run ``work`` as ``step``, behind the breaker of the step's dependency. Unguarded: failures
        raise :class:`StepFailed`. Guarded: a step that does not fit in the deadline is not started —
        ``shed`` when only the queue in front of it makes it miss (admission control), ``deadline``
        otherwise; one that fails, times out or meets an open breaker is recorded in ``degraded``; all
        return None. ``cost_key`` names its service-time estimate (default: the step, whatever its
        sub-query); the queue is estimated live (:meth:`queue_estimate`), never learnt as the step's cost.
        ``grace_s``: how far past the deadline the step may still run (the floor's grace)."""
        g = self.guards
        if g is None:
            return await self.timed(step, work(), **detail)
        key = cost_key or step.step.value
        reserve = g.reserve_s + reserve_after_s - grace_s  # grace: it may run that far past the deadline
        cost = g.costs.estimate_s(key, units) if g.costs is not None else 0.0
        timeout: float | None = None
        if g.deadline is not None:
            queue = self.queue_estimate(step.step, units)
            call_s = max(cost, queue.call_s)  # a call in a batch with the submissions ahead takes longer
            if not g.deadline.fits(queue.wait_s + call_s, reserve_s=reserve):
                fits_alone = g.deadline.fits(cost, reserve_s=reserve)
                why = (
                    shed(step, queue.wait_s + call_s - cost, cost, g.deadline)
                    if fits_alone
                    else not_started(step, cost, g.deadline)
                )
                self.outcome.degraded.append(why)
                return None
            timeout = g.deadline.timeout_s(reserve_s=reserve)
        dependency = step.dependency
        breaker = g.breakers.get(dependency) if dependency is not None else None
        start = time.perf_counter()
        with ticketed() as ticket:
            try:
                if breaker is not None:
                    call = breaker.call(work, timeout_s=timeout, ticket=ticket)
                    result = await self.timed(step, call, **detail)
                else:
                    result = await self.timed(step, _bounded(work(), timeout, ticket), **detail)
            except StepFailed as failed:
                self.outcome.degraded.append(failure_degradation(step, failed.__cause__, timeout))
                return None
        if g.costs is not None:
            g.costs.observe(key, service_s(time.perf_counter() - start, ticket), units)
        return result

    async def timed(self, step: StepKey, work: Awaitable[T], **detail: Any) -> T:
        """Await ``work`` as ``step``: its wall time into the outcome, an event to the listener; a failure
        raised as :class:`StepFailed` (a cancellation passes through)."""
        start = time.perf_counter()
        try:
            result = await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise StepFailed(step, exc) from exc
        ms = (time.perf_counter() - start) * 1000.0
        self.outcome.timings[step] = ms
        if self.on_step is not None:
            if isinstance(result, list):
                detail["hits"] = len(result)
            self.on_step(StepEvent(step, ms, detail))
        return result

    def announce(self, step: StepKey, detail: dict[str, Any]) -> None:
        """Tell the listener of a decision that takes no time (the rerank gate)."""
        if self.on_step is not None:
            self.on_step(StepEvent(step, 0.0, detail))

    def cpu(self, step: Step, fn: Callable[[], T]) -> Callable[[], T]:
        """``fn`` with its thread CPU time reported to the cost model (when the guards have one)."""
        g = self.guards
        if g is None or g.cpu is None:
            return fn
        report = g.cpu
        return cpu_timed(fn, lambda seconds: report(step, seconds, 1))


def cpu_timed(fn: Callable[[], T], sink: Callable[[float], None]) -> Callable[[], T]:
    """``fn`` measured in thread CPU time (the thread it runs in); the seconds go to ``sink``."""

    def timed() -> T:
        start = time.thread_time()
        try:
            return fn()
        finally:
            sink(time.thread_time() - start)

    return timed


async def _bounded(work: Awaitable[T], timeout_s: float | None, ticket: CallTicket) -> T:
    """``work`` within ``timeout_s``; a timeout while still queued reads as :class:`QueueTimeout`."""
    if timeout_s is None:
        return await work
    try:
        async with asyncio.timeout(timeout_s):  # not wait_for: it can lose a cancellation (breaker.call)
            return await work
    except TimeoutError as exc:
        if ticket.still_queued:
            queue = ticket.queue.name if ticket.queue is not None else "work"
            raise QueueTimeout(queue, ticket.queue_wait_s()) from exc
        raise
