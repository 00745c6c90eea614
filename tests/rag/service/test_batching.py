"""Micro-batching: concurrent submissions share one model call; cancellation and failures are per call."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from rag.dense.hashing import HashEmbedder
from rag.resilience.board import BreakerBoard
from rag.resilience.breaker import BreakerPolicy, State
from rag.resilience.failures import is_input_error
from rag.retrieval.compute import NO_QUEUE
from rag.service.batching import BatchedCompute, MicroBatcher, model_threads
from rag.testing.fakes import OverlapReranker


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.delay_s, self.fail_on = delay_s, fail_on
        self.threads: set[str] = set()

    def __call__(self, items: list[str]) -> np.ndarray:
        self.calls.append(list(items))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.delay_s)
        if self.fail_on is not None and self.fail_on in items:
            raise RuntimeError("model failed")
        return np.array([len(x) for x in items])


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def test_concurrent_submissions_become_one_call_and_each_gets_its_rows() -> None:
    fn = Recorder()

    async def go() -> list[np.ndarray]:
        batcher = MicroBatcher(
            fn, executor=ThreadPoolExecutor(1, thread_name_prefix="model"), max_items=64, window_ms=5
        )
        out = await asyncio.gather(*(batcher.submit(["x" * i, "y"]) for i in range(1, 11)))
        await batcher.close()
        return list(out)

    out = run(go())
    assert len(fn.calls) == 1 and len(fn.calls[0]) == 20
    assert [list(o) for o in out] == [[i, 1] for i in range(1, 11)]
    assert all(name.startswith("model") for name in fn.threads)  # never on the event loop's thread


def test_batches_are_capped_and_keep_submissions_whole() -> None:
    fn = Recorder()

    async def go() -> None:
        batcher = MicroBatcher(fn, executor=ThreadPoolExecutor(1), max_items=5, window_ms=5)
        await asyncio.gather(*(batcher.submit(["a", "b", "c"]) for _ in range(4)), batcher.submit(["z"] * 9))
        await batcher.close()

    run(go())
    assert sorted(len(c) for c in fn.calls) == [3, 3, 3, 3, 9]  # 3+3 > 5; the 9 runs alone


def test_while_the_model_is_busy_requests_pile_up_into_the_next_batch() -> None:
    fn = Recorder(delay_s=0.2)

    async def go() -> None:
        batcher = MicroBatcher(fn, executor=ThreadPoolExecutor(1), max_items=64, window_ms=0)
        first = asyncio.ensure_future(batcher.submit(["first"]))
        await asyncio.sleep(0.05)  # the first call is running now
        await asyncio.gather(first, *(batcher.submit([f"q{i}"]) for i in range(8)))
        await batcher.close()

    run(go())
    assert [len(c) for c in fn.calls] == [1, 8]


def test_a_cancelled_submission_is_dropped_and_a_failure_reaches_only_its_batch() -> None:
    fn = Recorder(delay_s=0.1, fail_on="bad")

    async def go() -> None:
        batcher = MicroBatcher(fn, executor=ThreadPoolExecutor(1), max_items=64, window_ms=0)
        busy = asyncio.ensure_future(batcher.submit(["busy"]))
        await asyncio.sleep(0.02)
        gone = asyncio.ensure_future(batcher.submit(["gone"]))
        kept = asyncio.ensure_future(batcher.submit(["kept"]))
        await asyncio.sleep(0)
        gone.cancel()
        assert list(await kept) == [4] and list(await busy) == [4]
        assert ["gone"] not in fn.calls and all("gone" not in c for c in fn.calls)
        with pytest.raises(RuntimeError, match="model failed"):
            await batcher.submit(["bad"])
        assert list(await batcher.submit(["fine"])) == [4]  # the batcher lives on
        await batcher.close()

    run(go())


def test_disabled_batching_sends_one_request_per_call() -> None:
    reranker = OverlapReranker()

    async def go() -> None:
        compute = BatchedCompute(HashEmbedder(16), reranker, enabled=False)
        await asyncio.gather(*(compute.score_pairs([("q", "p1"), ("q", "p2")]) for _ in range(5)))
        await compute.close()

    run(go())
    assert reranker.calls == [2] * 5


def test_batched_compute_matches_direct_calls() -> None:
    embedder, reranker = HashEmbedder(16), OverlapReranker()
    texts = [f"query about mice number {i}" for i in range(12)]
    pairs = [("mice", "cats hunt mice"), ("mice", "bees make honey")]

    async def go() -> tuple[list[np.ndarray], list[np.ndarray]]:
        compute = BatchedCompute(embedder, reranker, window_ms=2)
        vectors = await asyncio.gather(*(compute.embed_query(t) for t in texts))
        scores = await asyncio.gather(*(compute.score_pairs(pairs) for _ in range(3)))
        await compute.close()
        return list(vectors), list(scores)

    vectors, scores = run(go())
    np.testing.assert_allclose(np.stack(vectors), embedder.embed(texts), atol=1e-6)
    assert reranker.calls[-1] == 6  # three requests' pairs in one call
    for s in scores:
        np.testing.assert_allclose(s, [1.0, 0.0])


class Poisoned:
    """A model that refuses one input (``ValueError``, as a tokenizer does) and fails the whole batch
    that holds it, as a batched forward pass does."""

    def __init__(self, poison: str = "POISON") -> None:
        self.poison = poison
        self.calls: list[list[str]] = []

    def __call__(self, items: list[str]) -> np.ndarray:
        self.calls.append(list(items))
        if self.poison in items:
            raise ValueError(f"input refused: {self.poison!r}")
        return np.array([len(x) for x in items])


def test_a_poisoned_input_fails_alone_and_the_rest_of_its_batch_succeeds() -> None:
    fn = Poisoned()

    async def go() -> list[object]:
        batcher = MicroBatcher(fn, executor=ThreadPoolExecutor(1), max_items=64, window_ms=5)
        out = await asyncio.gather(
            batcher.submit(["good"]),
            batcher.submit(["POISON"]),
            batcher.submit(["fine!"]),
            return_exceptions=True,
        )
        await batcher.close()
        return list(out)

    good, bad, fine = run(go())
    assert fn.calls[0] == ["good", "POISON", "fine!"]  # one batch of three, which failed
    assert isinstance(good, np.ndarray) and list(good) == [4]
    assert isinstance(fine, np.ndarray) and list(fine) == [5]
    assert isinstance(bad, ValueError) and is_input_error(bad)
    assert sorted(fn.calls[1:]) == [["POISON"], ["fine!"], ["good"]]  # each member retried alone


def test_a_dependency_failure_is_not_retried_member_by_member() -> None:
    calls: list[list[str]] = []

    def down(items: list[str]) -> np.ndarray:
        calls.append(list(items))
        raise ConnectionError("model server unreachable")

    async def go() -> list[object]:
        batcher = MicroBatcher(down, executor=ThreadPoolExecutor(1), max_items=64, window_ms=5)
        out = await asyncio.gather(*(batcher.submit([f"q{i}"]) for i in range(3)), return_exceptions=True)
        await batcher.close()
        return list(out)

    out = run(go())
    assert all(isinstance(e, ConnectionError) for e in out)
    assert len(calls) == 1, "a dead dependency was called once per member"


def test_an_input_error_does_not_count_as_a_breaker_failure() -> None:
    """The embedder's breaker (as the service builds it) counts a dependency's failure, not a bad
    input's: one poisoned query per call for a whole window never opens it, a dead model does."""
    policy = BreakerPolicy(
        failure_rate=0.5, slow_call_s=60.0, window_calls=4, min_calls=4, window_s=60.0, open_s=60.0
    )
    breaker = BreakerBoard({"embedder": policy})["embedder"]
    fn = Poisoned()

    async def go() -> None:
        batcher = MicroBatcher(fn, executor=ThreadPoolExecutor(1), max_items=64, window_ms=0)
        for _ in range(6):
            with pytest.raises(ValueError):
                await breaker.call(lambda: batcher.submit(["POISON"]))
        assert breaker.snapshot()["failure_rate"] == 0 and breaker.state is State.CLOSED
        for _ in range(4):
            with pytest.raises(RuntimeError):
                await breaker.call(lambda: _raise(RuntimeError("model crashed")))
        assert breaker.state is State.OPEN  # a failing dependency still opens it
        await batcher.close()

    run(go())


async def _raise(exc: Exception) -> np.ndarray:
    raise exc


def test_a_failing_cost_report_neither_fails_the_batch_nor_repeats_the_model_call() -> None:
    """``on_batch`` is bookkeeping (CPU costs): when it raises, the model's answer still reaches every
    submission, and the batch is not re-run member by member."""
    fn = Recorder()

    def broken_report(items: int, cpu_s: float) -> None:
        raise RuntimeError("metrics backend broke")

    async def go() -> list[np.ndarray]:
        batcher = MicroBatcher(
            fn, executor=ThreadPoolExecutor(1), max_items=64, window_ms=5, on_batch=broken_report
        )
        out = await asyncio.gather(*(batcher.submit(["x" * i]) for i in range(1, 4)))
        await batcher.close()
        return list(out)

    out = run(go())
    assert [list(o) for o in out] == [[1], [2], [3]]
    assert len(fn.calls) == 1


def test_a_model_call_costs_its_thread_time_times_the_threads_the_model_runs_on() -> None:
    """The cost model's CPU per call: onnxruntime models say how many intra-op threads they keep busy (torch
    need not be loaded at all), others go by torch's pool."""

    class Onnxish:
        intra_op_threads = 3

    assert model_threads(Onnxish()) == 3
    import torch  # a torch model's calls use torch's intra-op pool

    assert model_threads(HashEmbedder(8)) == max(torch.get_num_threads(), 1)

    inside: list[float] = []

    def burn(items: list[str]) -> np.ndarray:
        start = time.thread_time()
        total = 0
        while time.thread_time() - start < 0.02:
            total += sum(range(1000))
        inside.append(time.thread_time() - start)
        return np.zeros((len(items), 1))

    reported: list[float] = []

    async def go() -> None:
        batcher = MicroBatcher(
            burn,
            executor=ThreadPoolExecutor(1),
            max_items=8,
            window_ms=0,
            on_batch=lambda items, cpu_s: reported.append(cpu_s),
            threads=3,
        )
        await batcher.submit(["x"])
        await batcher.close()

    run(go())
    assert len(reported) == 1 and 3.0 <= reported[0] / inside[0] < 3.3


def test_the_queue_estimate_counts_the_call_in_flight_and_the_full_batches_ahead() -> None:
    from rag.service.batching import batch_queue_estimate

    idle = batch_queue_estimate(0, 1, 64, 0.01, 0.0)
    assert (idle.wait_s, idle.call_s) == (0.0, 0.0)
    # 10 items queued: joins their batch; waits for the 30 ms left of the call in flight
    behind = batch_queue_estimate(10, 1, 64, 0.01, 0.03)
    assert behind.wait_s == pytest.approx(0.03) and behind.call_s == pytest.approx(0.11)
    # 130 queued with batches of 64: two full batches first, then a batch of 2 + this one
    deep = batch_queue_estimate(130, 1, 64, 0.01, 0.0)
    assert deep.wait_s == pytest.approx(1.28) and deep.call_s == pytest.approx(0.03)


def test_the_loop_lag_adds_to_the_optional_steps_never_to_the_floor() -> None:
    from rag.types import Step

    async def go() -> None:
        compute = BatchedCompute(HashEmbedder(8), None)
        try:
            compute.loop_lag.observe(0.2)  # the loop woke a task 200 ms late
            lag = compute.loop_lag.lag_s()
            assert lag > 0
            assert compute.queue_estimate(Step.EMBED, "acme").wait_s == pytest.approx(lag)
            assert compute.queue_estimate(Step.RETRIEVE_DENSE, "acme").wait_s == pytest.approx(lag)
            assert compute.queue_estimate(Step.RETRIEVE_BM25, "acme").wait_s == 0.0  # the floor
        finally:
            await compute.close()

    asyncio.run(go())


def test_bm25_runs_inline_only_while_measured_cheap() -> None:
    from rag.resilience.deadline import StepCosts
    from rag.service.batching import INLINE_CPU_MAX_S
    from rag.types import Step

    async def go() -> None:
        costs = StepCosts(alpha=1.0)
        compute = BatchedCompute(None, None, cpu_costs=costs)
        try:
            assert not compute.runs_inline(Step.RETRIEVE_BM25)  # unmeasured: the pool measures it
            costs.observe(Step.RETRIEVE_BM25, INLINE_CPU_MAX_S / 2)
            assert compute.runs_inline(Step.RETRIEVE_BM25)
            loop_thread = threading.get_ident()
            ran_on = await compute.run(threading.get_ident, step=Step.RETRIEVE_BM25)
            assert ran_on == loop_thread
            costs.observe(Step.RETRIEVE_BM25, INLINE_CPU_MAX_S * 2)  # a larger index: back to the pool
            assert await compute.run(threading.get_ident, step=Step.RETRIEVE_BM25) != loop_thread
            costs.observe(Step.RETRIEVE_DENSE, INLINE_CPU_MAX_S / 2)
            assert not compute.runs_inline(Step.RETRIEVE_DENSE)  # the vector search stays in the pool
        finally:
            await compute.close()

    asyncio.run(go())


def test_a_step_that_runs_inline_has_no_queue_in_front_of_it() -> None:
    from rag.resilience.deadline import StepCosts
    from rag.types import Step

    async def go() -> None:
        costs = StepCosts(alpha=1.0)
        compute = BatchedCompute(None, None, cpu_costs=costs)
        try:
            compute.loop_lag.observe(0.2)
            assert (
                compute.queue_estimate(Step.RETRIEVE_BM25, "acme").wait_s == 0.0
            )  # the floor: never the lag
            costs.observe(Step.RETRIEVE_BM25, 0.001)
            assert compute.queue_estimate(Step.RETRIEVE_BM25, "acme") == NO_QUEUE  # inline: no pool queue
        finally:
            await compute.close()

    asyncio.run(go())
