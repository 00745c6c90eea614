"""The CPU pool (rag.service.fair_pool): jobs taken round-robin across lanes (tenants), so one lane's
burst does not queue in front of another lane's job; its wait estimate follows the round-robin order."""

from __future__ import annotations

import threading

import pytest

from rag.service.fair_pool import FairPool, jobs_ahead, wait_estimate_s


def test_a_lane_with_one_job_waits_for_one_job_of_a_burst_not_the_burst() -> None:
    pool = FairPool(1)
    started, gate, order = threading.Event(), threading.Event(), []

    def block() -> None:
        started.set()
        gate.wait()

    try:
        blocker = pool.submit("acme", block)
        assert started.wait(5)  # the worker is busy
        burst = [pool.submit("acme", lambda i=i: order.append(f"acme{i}")) for i in range(10)]
        other = pool.submit("globex", lambda: order.append("globex"))
        assert pool.estimate("globex").wait_s >= 0.0
        gate.set()
        blocker.result(timeout=5)
        other.result(timeout=5)
        for future in burst:
            future.result(timeout=5)
    finally:
        pool.shutdown()
    assert order.index("globex") == 1  # after one acme job, not after ten
    assert sorted(order) == sorted([*(f"acme{i}" for i in range(10)), "globex"])


def test_a_job_cancelled_before_it_starts_is_skipped_and_errors_reach_the_caller() -> None:
    pool = FairPool(1)
    gate, ran = threading.Event(), []
    try:
        pool.submit("a", gate.wait)
        cancelled = pool.submit("a", lambda: ran.append("cancelled"))
        assert cancelled.cancel()
        failing = pool.submit("a", lambda: 1 / 0)
        gate.set()
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=5)
    finally:
        pool.shutdown()
    assert ran == []


def test_jobs_ahead_follow_the_round_robin_order() -> None:
    assert jobs_ahead([], 0) == 0
    assert jobs_ahead([100], 0) == 1  # a new lane waits for one job of the burst
    assert jobs_ahead([100, 3], 2) == 2 + 3 + 3  # its own two, then up to three of each other lane
    assert jobs_ahead([1, 1], 5) == 5 + 1 + 1


def test_the_wait_estimate_is_zero_only_with_a_free_worker_and_nothing_ahead() -> None:
    assert wait_estimate_s(0, busy=1, workers=2, job_s=0.01) == 0.0
    assert wait_estimate_s(0, busy=2, workers=2, job_s=0.01) == pytest.approx(0.005)
    assert wait_estimate_s(10, busy=2, workers=2, job_s=0.01) == pytest.approx(0.055)
    pool = FairPool(2)
    try:
        assert pool.retry_after_s() == 1  # nothing queued: the least Retry-After
    finally:
        pool.shutdown()
