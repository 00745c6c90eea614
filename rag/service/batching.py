"""Micro-batching of model calls across concurrent requests.

Concurrent queries each need one embedding and up to ``rerank_depth`` cross-encoder pairs. Sent one by
one, each is a small forward pass; collected, they are one larger pass, which on a CPU costs far less
than the sum of the small ones. A :class:`MicroBatcher` collects submissions while the model is busy (and
for ``window_ms`` after an idle period), then runs them as one call on a dedicated model thread, so the
event loop never blocks on a model.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Generic, TypeVar

import numpy as np

from rag.dense.embedder import Embedder
from rag.errors import RagError
from rag.metrics import MODEL_BATCH_SIZE, QUEUE_WAIT
from rag.rerank.cross_encoder import Pair, Reranker
from rag.resilience.background import cancel_and_wait
from rag.resilience.deadline import StepCosts, ewma
from rag.resilience.dependency_call import CallTicket, current_ticket
from rag.resilience.failures import is_dependency_failure
from rag.retrieval.compute import NO_QUEUE, QueueEstimate
from rag.service.fair_pool import FairPool
from rag.service.loop_lag import LoopLag
from rag.types import Step

log = logging.getLogger(__name__)

I = TypeVar("I")  # noqa: E741 - item

INLINE_STEPS = frozenset({Step.RETRIEVE_BM25, Step.RETRIEVE_BM25_PRF})
INLINE_CPU_MAX_S = 0.005  # a CPU step measured at most this runs on the event loop (runs_inline)
T = TypeVar("T")


@dataclass(slots=True)
class _Request(Generic[I]):
    items: list[I]
    future: asyncio.Future[np.ndarray]
    ticket: CallTicket | None = None
    queued_at: float = 0.0


@dataclass(slots=True)
class _Call:
    """One model call, as the model thread saw it."""

    out: np.ndarray | None
    error: Exception | None
    cpu_s: float
    took_s: float


class InputRejected(RagError, ValueError):
    """The model failed on this submission's input alone while it served the rest of its batch: the
    input's fault, not the model's (an input error to the breakers, :mod:`rag.resilience.failures`)."""


def _dependency_side(exc: BaseException) -> bool:
    """A timeout or a connection error: the model (or the server behind it) is unavailable, so retrying
    each submission alone would only call a dead dependency once per member."""
    return isinstance(exc, TimeoutError | ConnectionError | OSError)


class MicroBatcher(Generic[I]):
    """Runs ``fn(items) -> array with one row per item`` over the items of many concurrent submissions.

    A batch takes whole submissions, oldest first, up to ``max_items`` items — fewer when a call of that
    many would run longer than ``max_call_s`` at the measured time per item (:meth:`batch_items`: a batch
    that outlasts its members' deadlines answers none of them) — (a single submission larger
    than that runs alone). A cancelled submission that has not started is dropped from its batch. When a
    batch of several submissions fails other than by a timeout or connection error, each submission is
    run again alone: only the one whose input fails gets the error (:class:`InputRejected`).

    It measures itself for admission control: :meth:`estimate` says how long a new submission would wait
    before its call starts (the call in flight, then the full batches ahead of it) and how long that call
    would take (a batch with the items ahead of it in its batch), at the measured time per item,
    and it stamps each submission's :class:`~rag.resilience.dependency_call.CallTicket` when its call
    starts, so that the breaker in front of it judges the model, not this queue.
    """

    def __init__(
        self,
        fn: Callable[[list[I]], np.ndarray],
        *,
        executor: Executor,
        max_items: int,
        max_call_s: float | None = None,
        window_ms: float = 1.0,
        max_requests: int | None = None,
        name: str = "batch",
        on_batch: Callable[[int, float], None] | None = None,
        threads: int = 1,
    ) -> None:
        """``on_batch(items, cpu_s)`` is told the CPU time of every model call (see :func:`_cpu_of`;
        ``threads``: how many threads a call of ``fn`` keeps busy, :func:`model_threads`)."""
        if max_items < 1:
            raise ValueError(f"max_items must be at least 1, got {max_items}")
        if window_ms < 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        self.fn = fn
        self.executor = executor
        self.max_items = max_items
        self.max_call_s = max_call_s
        self.max_requests = max_requests
        self.window_s = window_ms / 1000.0
        self.name = name
        self.on_batch = on_batch
        self.threads = threads
        self._pending: deque[_Request[I]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task[None] | None = None
        self.batches = 0  # counters for tests and metrics
        self.items_run = 0
        self._in_flight: tuple[float, int] | None = None  # (start, items) of the call running now
        self._item_s: float | None = None  # running mean of a call's wall time per item

    def busy_s(self) -> float:
        """How long the call running now has run (0 when idle)."""
        return time.monotonic() - self._in_flight[0] if self._in_flight is not None else 0.0

    def estimate(self, items: int = 1) -> QueueEstimate:
        """What this queue adds to a submission of ``items`` made now (nothing when idle)."""
        waiting = sum(len(r.items) for r in self._pending if not r.future.done())
        return batch_queue_estimate(
            waiting, items, self.batch_items(), self._item_s or 0.0, self._in_flight_left_s()
        )

    def batch_items(self) -> int:
        """The most items one call takes now: ``max_items``, or fewer so that a call stays within
        ``max_call_s`` at the measured time per item."""
        if self.max_call_s is None or not self._item_s:
            return self.max_items
        return max(1, min(self.max_items, int(self.max_call_s / self._item_s)))

    def _in_flight_left_s(self) -> float:
        if self._in_flight is None:
            return 0.0
        started, n = self._in_flight
        return max(n * (self._item_s or 0.0) - (time.monotonic() - started), 0.0)

    async def submit(self, items: Sequence[I]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if self._worker is None or self._worker.done():
            self._wakeup = asyncio.Event()
            self._worker = loop.create_task(self._run(), name=f"micro-batcher:{self.name}")
        assert self._wakeup is not None
        ticket = current_ticket()
        if ticket is not None:
            ticket.enqueued(self)
        request = _Request(list(items), loop.create_future(), ticket, time.monotonic())
        self._pending.append(request)
        self._wakeup.set()
        return await request.future

    def _take(self) -> list[_Request[I]]:
        batch: list[_Request[I]] = []
        size = 0
        limit = self.batch_items()
        while self._pending:
            request = self._pending[0]
            if request.future.done():  # cancelled while waiting
                self._pending.popleft()
                continue
            if batch and (
                size + len(request.items) > limit
                or (self.max_requests is not None and len(batch) >= self.max_requests)
            ):
                break
            batch.append(self._pending.popleft())
            size += len(request.items)
        return batch

    async def _run(self) -> None:
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            if self.window_s and sum(len(r.items) for r in self._pending) < self.batch_items():
                await asyncio.sleep(self.window_s)  # let requests arriving together share the pass
            batch = self._take()
            if not self._pending:
                self._wakeup.clear()
            if not batch:
                continue
            try:
                out = await self._call(batch)
            except Exception as exc:
                if len(batch) > 1 and not _dependency_side(exc):
                    await self._isolate(batch)  # one bad input must not fail its batch-mates
                    continue
                for request in batch:  # the dependency failed: every submission gets the failure
                    if not request.future.done():
                        request.future.set_exception(exc)
                continue
            start = 0
            for request in batch:
                end = start + len(request.items)
                if not request.future.done():
                    request.future.set_result(out[start:end])
                start = end

    async def _call(self, batch: list[_Request[I]]) -> np.ndarray:
        """One model call over the items of ``batch`` (on the model thread), counted. The call is timed
        on the model thread (:meth:`_timed_call`): the turn of the event loop that brings the result back
        is the loop's lag, not the model's time."""
        items = [item for request in batch for item in request.items]
        loop = asyncio.get_running_loop()
        start = time.monotonic()
        wait = QUEUE_WAIT.labels(self.name)
        for request in batch:
            if request.ticket is not None:
                request.ticket.dispatched()
            wait.observe(start - request.queued_at)
        call = await loop.run_in_executor(self.executor, self._timed_call, items)
        failed = call.error is not None and is_dependency_failure(call.error)
        for request in batch:  # the breakers of callers that timed out meanwhile judge this call
            if request.ticket is not None:
                request.ticket.call_done(call.took_s, failed)
        if call.error is not None:
            raise call.error
        assert call.out is not None
        self._item_s = ewma(self._item_s, call.took_s / max(len(items), 1), 0.2)
        self.batches += 1
        MODEL_BATCH_SIZE.labels(self.name).observe(len(items))
        self.items_run += len(items)
        if self.on_batch is not None:
            try:
                self.on_batch(len(items), call.cpu_s)
            except Exception:  # bookkeeping: a broken cost report must not fail (or re-run) the answer
                log.exception("%s: on_batch failed", self.name)
        return call.out

    def _timed_call(self, items: list[I]) -> _Call:
        """On the model thread: ``fn(items)``, its CPU and wall time, the error it raised (not raised)."""
        start = time.monotonic()
        self._in_flight = (start, len(items))
        try:
            out, cpu_s = _cpu_of(self.fn, items, self.threads)
            return _Call(out, None, cpu_s, time.monotonic() - start)
        except Exception as exc:
            return _Call(None, exc, 0.0, time.monotonic() - start)
        finally:
            self._in_flight = None

    async def _isolate(self, batch: list[_Request[I]]) -> None:
        """After a batch failed: each submission alone, so only the one(s) whose input fails get an error.
        A submission that fails alone while another succeeded is refused for its input
        (:class:`InputRejected`, an input error to the breakers: :mod:`rag.resilience.failures`)."""
        failed: list[tuple[_Request[I], Exception]] = []
        succeeded = False
        for request in batch:
            if request.future.done():  # cancelled meanwhile
                continue
            try:
                out = await self._call([request])
            except Exception as exc:
                failed.append((request, exc))
                continue
            succeeded = True
            if not request.future.done():
                request.future.set_result(out)
        for request, error in failed:
            if request.future.done():
                continue
            if succeeded and not isinstance(error, InputRejected) and not _dependency_side(error):
                rejected = InputRejected(f"{self.name}: the model refused this input ({error})")
                rejected.__cause__ = error
                request.future.set_exception(rejected)
            else:
                request.future.set_exception(error)

    async def close(self) -> None:
        if self._worker is not None:
            await cancel_and_wait(self._worker)
            self._worker = None


class BatchedCompute:
    """The service's :class:`~rag.retrieval.compute.Compute`: CPU work in the :class:`FairPool` (taken
    round-robin across tenants), model calls micro-batched, embeddings and reranking each on a thread of
    their own: bulkheads, so that a hung or slow reranker never holds up the embeddings, and no model
    call ever queues in front of BM25 (the floor every answer stands on)."""

    def __init__(
        self,
        embedder: Embedder | None,
        reranker: Reranker | None,
        *,
        window_ms: float = 1.0,
        max_queries: int = 64,
        max_pairs: int = 256,
        max_call_s: float | None = None,
        enabled: bool = True,
        on_cpu: Callable[[str, float, int], None] | None = None,
        cpu_workers: int = 2,
        cpu_costs: StepCosts | None = None,
    ) -> None:
        """``on_cpu(step, cpu_s, units)`` receives the CPU time of each model call ("embed" per text,
        "rerank" per pair); ``cpu_workers``: the threads of the CPU pool; ``cpu_costs``: the measured CPU
        time of each CPU step (which of them run inline, :meth:`runs_inline`); ``max_call_s``: the longest a
        model call may be planned to run (batches are cut to fit, :meth:`MicroBatcher.batch_items`)."""
        self.cpu = FairPool(cpu_workers)
        self._cpu_costs = cpu_costs  # each CPU step's measured CPU time (runs_inline)
        self.loop_lag = LoopLag()
        self.embed_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-embed")
        self.rerank_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-rerank")
        one = None if enabled else 1  # disabled: one request per model call, still off the event loop
        self.embedder = embedder
        self.embeddings: MicroBatcher[str] | None = None
        self.rerank: MicroBatcher[Pair] | None = None
        # batchers of other embedders (a served index version built with another model), by name; all on
        # the one embed thread, so two models never compete for the cores
        self._other_embeddings: dict[str, MicroBatcher[str]] = {}
        self._embed_batcher = partial(
            self._new_embed_batcher,
            max_queries=max_queries,
            max_call_s=max_call_s,
            window_ms=window_ms if enabled else 0.0,
            max_requests=one,
            on_cpu=on_cpu,
        )
        if embedder is not None:
            self.embeddings = self._embed_batcher(embedder)
        if reranker is not None:
            self.rerank = MicroBatcher(
                reranker.score_pairs,
                executor=self.rerank_thread,
                max_items=max_pairs,
                max_call_s=max_call_s,
                window_ms=window_ms if enabled else 0.0,
                max_requests=one,
                name="rerank",
                on_batch=_reporter(on_cpu, Step.RERANK),
                threads=model_threads(reranker),
            )

    async def run(self, fn: Callable[..., T], *args: Any, lane: str = "", step: Step | None = None) -> T:
        if step is not None and self.runs_inline(step):
            return fn(*args)
        result: T = await asyncio.wrap_future(self.cpu.submit(lane, partial(fn, *args)))
        return result

    def runs_inline(self, step: Step) -> bool:
        """BM25 runs on the event loop when its measured CPU time is at most :data:`INLINE_CPU_MAX_S`
        (SciFact's 5,000 documents: ~1 ms): a trip through the CPU pool costs two turns of the loop and
        GIL hand-offs, which under load are worth far more than that. A larger index's BM25 measures
        more and goes to the pool, where it cannot stall the loop. Unmeasured yet: the pool."""
        if step not in INLINE_STEPS or self._cpu_costs is None:
            return False
        cpu_s = self._cpu_costs.estimate_s(step.value)
        return 0.0 < cpu_s <= INLINE_CPU_MAX_S

    def queue_estimate(self, step: Step, lane: str, units: int = 1) -> QueueEstimate:
        """What the queue in front of ``step`` adds if it is submitted now (admission control), and — for
        the optional steps, not BM25 — the event loop's lag after it (:mod:`rag.service.loop_lag`): a
        saturated loop sheds model work first, which also gives its CPU back to the loop; refusing the
        floor for it would turn a late answer into none."""
        self.loop_lag.start()
        if self.runs_inline(step):
            return NO_QUEUE  # done at once, on the loop: no queue in front of it
        if step is Step.EMBED:
            queue = self.embeddings.estimate(units) if self.embeddings is not None else NO_QUEUE
        elif step is Step.RERANK:
            queue = self.rerank.estimate(units) if self.rerank is not None else NO_QUEUE
        else:
            queue = self.cpu.estimate(lane)
        lag = 0.0 if step is Step.RETRIEVE_BM25 else self.loop_lag.lag_s()
        return QueueEstimate(queue.wait_s + lag, queue.call_s) if lag > 0 else queue

    def retry_after_s(self) -> int:
        """When to try again once even BM25 cannot answer in time: the CPU pool's drain time."""
        return self.cpu.retry_after_s()

    def _new_embed_batcher(
        self,
        embedder: Embedder,
        *,
        max_queries: int,
        max_call_s: float | None,
        window_ms: float,
        max_requests: int | None,
        on_cpu: Callable[[str, float, int], None] | None,
    ) -> MicroBatcher[str]:
        return MicroBatcher(
            partial(_embed, embedder),
            executor=self.embed_thread,
            max_items=max_queries,
            max_call_s=max_call_s,
            window_ms=window_ms,
            max_requests=max_requests,
            name="embed",
            on_batch=_reporter(on_cpu, Step.EMBED),
            threads=model_threads(embedder),
        )

    def _batcher_of(self, embedder: Embedder | None) -> MicroBatcher[str] | None:
        """The batcher of ``embedder`` (None or the compute's own: the default one). Another model (the
        served version's, after a switch to a version built with it) gets a batcher of its own, so a
        batch never mixes the queries of two models."""
        if embedder is None or embedder is self.embedder:
            return self.embeddings
        batcher = self._other_embeddings.get(embedder.name)
        if batcher is None:
            batcher = self._other_embeddings[embedder.name] = self._embed_batcher(embedder)
        return batcher

    async def embed_query(self, text: str, embedder: Embedder | None = None) -> np.ndarray:
        batcher = self._batcher_of(embedder)
        if batcher is None:
            raise RuntimeError("no embedder")
        vector: np.ndarray = (await batcher.submit([text]))[0]
        return vector

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        if self.rerank is None:
            raise RuntimeError("no reranker")
        return await self.rerank.submit(pairs)

    async def close(self) -> None:
        await self.loop_lag.close()
        for batcher in (self.embeddings, self.rerank, *self._other_embeddings.values()):
            if batcher is not None:
                await batcher.close()
        for thread in (self.embed_thread, self.rerank_thread):
            thread.shutdown(wait=False, cancel_futures=True)
        self.cpu.shutdown()


def batch_queue_estimate(
    waiting: int, items: int, max_items: int, item_s: float, in_flight_left_s: float
) -> QueueEstimate:
    """A submission of ``items`` behind ``waiting`` queued items: it waits for the call in flight and the
    full batches ahead of it, then runs in a batch with the items ahead of it in that batch (``item_s``
    per item). Nothing when nothing is queued or running."""
    full_batches, in_batch = divmod(waiting, max_items)
    wait = in_flight_left_s + full_batches * max_items * item_s
    return QueueEstimate(wait, min(in_batch + items, max(max_items, items)) * item_s if waiting else 0.0)


def _reporter(
    on_cpu: Callable[[str, float, int], None] | None, step: str
) -> Callable[[int, float], None] | None:
    if on_cpu is None:
        return None
    return lambda items, cpu_s: on_cpu(step, cpu_s, items)


def _cpu_of(fn: Callable[[list[I]], np.ndarray], items: list[I], threads: int) -> tuple[np.ndarray, float]:
    """``fn(items)`` and its CPU seconds: the calling thread's CPU time times the model's intra-op
    ``threads`` (a forward pass keeps them all busy; the other threads' time is not visible to this one)."""
    start = time.thread_time()
    out = fn(items)
    return out, (time.thread_time() - start) * threads


def model_threads(model: object) -> int:
    """How many threads one call of ``model`` keeps busy: an onnxruntime model's own intra-op count
    (``intra_op_threads``), else torch's intra-op pool when torch is loaded, else 1 (a test fake)."""
    threads = getattr(model, "intra_op_threads", None)
    if isinstance(threads, int) and threads > 0:
        return threads
    torch = sys.modules.get("torch")
    return max(int(torch.get_num_threads()), 1) if torch is not None else 1


def _embed(embedder: Embedder, texts: list[str]) -> np.ndarray:
    return embedder.embed(texts, batch_size=len(texts))
