"""Auto-fallback: the sliding window with a fake clock, each threshold tripping (never below min_samples),
the latch until an admin reset, listeners, and the bound on tracked keys."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from rag.rollout.fallback import AutoFallback, FallbackEvent, FallbackPolicy, SlidingWindow, should_trip

KEY = ("acme", "rerank.v2")


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_window_sums_outcomes_and_evicts_old_ones() -> None:
    clock = FakeClock()
    window = SlidingWindow(300, clock=clock)
    window.add(ok=True, timed_out=False, latency_s=0.1)
    window.add(ok=False, timed_out=False, latency_s=0.3)
    clock.now += 100
    window.add(ok=False, timed_out=True, latency_s=0.8)
    stats = window.stats()
    assert (stats.count, stats.errors, stats.timeouts) == (3, 2, 1)  # a timeout is an error too
    assert stats.error_rate == pytest.approx(2 / 3) and stats.timeout_rate == pytest.approx(1 / 3)
    assert stats.mean_latency_s == pytest.approx(0.4)
    clock.now += 199.5  # the first bucket started 299.5 s ago: still in
    assert window.stats().count == 3
    clock.now += 0.5  # now 300 s old: out
    assert window.stats().count == 1 and window.stats().timeouts == 1
    clock.now += 100
    assert window.stats() == SlidingWindow(300, clock=clock).stats()  # empty: zeros, no NaN
    assert window.stats().error_rate == 0.0 and window.stats().mean_latency_s == 0.0


def test_window_memory_is_bounded_by_its_buckets_not_its_traffic() -> None:
    clock = FakeClock()
    window = SlidingWindow(10, clock=clock)
    for i in range(10_000):
        clock.now = 1000.0 + i * 0.01  # 100 outcomes per second for 100 s
        window.add(ok=True, latency_s=0.01)
    assert len(window) <= 11
    assert window.stats().count == 1000  # the last 10 s


def test_window_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="bucket_s"):
        SlidingWindow(0)
    with pytest.raises(ValueError, match="latency_s"):
        SlidingWindow(10).add(ok=True, latency_s=float("nan"))


def test_policy_rejects_bad_values_with_the_field_name() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        FallbackPolicy(timeout_s=1, error_rate=0)
    with pytest.raises(ValueError, match="timeout_s"):
        FallbackPolicy(timeout_s=0)
    with pytest.raises(ValueError, match="min_samples"):
        FallbackPolicy(timeout_s=1, min_samples=0)


def make(**policy: Any) -> tuple[AutoFallback, FakeClock, list[FallbackEvent]]:
    clock = FakeClock()
    fallback = AutoFallback(replace(FallbackPolicy(timeout_s=1.0, min_samples=20), **policy), clock)
    events: list[FallbackEvent] = []
    fallback.listeners.append(events.append)
    return fallback, clock, events


@pytest.mark.parametrize(
    ("outcome", "threshold", "value"),
    [
        ({"ok": False, "timed_out": False, "latency_s": 0.1}, "error_rate", 1.0),
        ({"ok": False, "timed_out": True, "latency_s": 0.1}, "error_rate", 1.0),
        ({"ok": True, "timed_out": False, "latency_s": 0.9}, "mean_latency_s", 0.9),
    ],
)
def test_each_threshold_trips_once_min_samples_are_in(
    outcome: dict[str, Any], threshold: str, value: float
) -> None:
    fallback, _, events = make()
    for _ in range(19):
        assert fallback.record(KEY, **outcome) is None
    assert not fallback.is_tripped(KEY) and events == []  # 19 < min_samples: never
    trip = fallback.record(KEY, **outcome)
    assert trip is not None and trip.threshold == threshold and trip.value == pytest.approx(value)
    assert fallback.is_tripped(KEY)
    assert [(e.key, e.kind, e.trip) for e in events] == [(KEY, "tripped", trip)]


def test_timeout_rate_trips_below_the_error_rate() -> None:
    fallback, _, _ = make()
    for i in range(20):  # 35 % timeouts, 35 % errors: under error_rate 0.5, over timeout_rate 0.3
        fallback.record(KEY, ok=i >= 7, timed_out=i < 7, latency_s=0.1)
    status = fallback.status(KEY)
    assert status["tripped"] and status["threshold"] == "timeout_rate"
    assert status["value"] == pytest.approx(0.35) and status["limit"] == 0.3


def test_latency_limit_is_a_ratio_of_the_deadline() -> None:
    fallback, _, _ = make(timeout_s=2.0, latency_ratio=0.5)
    for _ in range(20):
        fallback.record(KEY, ok=True, latency_s=0.99)
    assert not fallback.is_tripped(KEY)
    fallback.record(KEY, ok=True, latency_s=1.5)
    assert fallback.status(KEY)["limit"] == 1.0 and fallback.is_tripped(KEY)


def test_healthy_traffic_never_trips() -> None:
    fallback, _, events = make()
    for i in range(1000):
        fallback.record(KEY, ok=i % 10 != 0, latency_s=0.2)  # 10 % errors
    assert not fallback.is_tripped(KEY) and events == []


def test_errors_spread_beyond_the_window_do_not_add_up() -> None:
    fallback, clock, _ = make(window_s=60)
    for _ in range(15):
        fallback.record(KEY, ok=False)
    clock.now += 61
    for _ in range(15):
        fallback.record(KEY, ok=False)
    assert not fallback.is_tripped(KEY)  # 15 + 15 errors, but never 20 samples in one window


def test_a_trip_is_latched_until_an_admin_reset() -> None:
    fallback, clock, events = make()
    for _ in range(20):
        fallback.record(KEY, ok=False)
    clock.now += 3600  # the window is long empty, the key stays on the baseline
    assert fallback.is_tripped(KEY)
    assert fallback.status(KEY)["tripped_for_s"] == 3600
    assert fallback.reset(KEY) is True
    assert not fallback.is_tripped(KEY) and fallback.status(KEY)["window"]["count"] == 0
    assert fallback.reset(KEY) is False  # not tripped any more: nothing to do
    assert [e.kind for e in events] == ["tripped", "reset"]
    assert events[1].trip is not None and events[1].trip.threshold == "error_rate"


def test_keys_are_independent_and_reset_all_resets_every_tripped_one() -> None:
    fallback, _, events = make()
    for key in [("acme", "a"), ("acme", "b"), ("globex", "a")]:
        for _ in range(20):
            fallback.record(key, ok=key == ("acme", "b"))
    assert fallback.tripped() == [("acme", "a"), ("globex", "a")]
    assert [row["tripped"] for row in fallback.all_status()] == [True, True, False]
    assert fallback.reset_all() == 2 and fallback.tripped() == []
    assert [e.kind for e in events] == ["tripped", "tripped", "reset", "reset"]


def test_a_failing_listener_does_not_break_recording() -> None:
    fallback, _, events = make()

    def broken(event: FallbackEvent) -> None:
        raise RuntimeError("metrics down")

    fallback.listeners.insert(0, broken)
    for _ in range(20):
        fallback.record(KEY, ok=False)
    assert fallback.is_tripped(KEY) and len(events) == 1


def test_unknown_key_status() -> None:
    fallback, _, _ = make()
    assert not fallback.is_tripped(("nobody", "x"))
    assert fallback.status(("nobody", "x")) == {
        "tenant": "nobody",
        "path": "x",
        "tripped": False,
        "window": {
            "count": 0,
            "errors": 0,
            "timeouts": 0,
            "error_rate": 0.0,
            "timeout_rate": 0.0,
            "mean_latency_s": 0.0,
        },
    }
    assert len(fallback) == 0  # asking does not track


def test_tracked_keys_are_capped_and_tripped_keys_are_kept() -> None:
    clock = FakeClock()
    fallback = AutoFallback(FallbackPolicy(timeout_s=1.0, min_samples=1), clock, max_keys=3)
    fallback.record(("t0", "p"), ok=False)  # tripped
    for i in range(1, 10):
        clock.now += 1
        fallback.record((f"t{i}", "p"), ok=True)
    assert len(fallback) == 3
    assert fallback.is_tripped(("t0", "p"))  # the oldest, but tripped: kept
    assert {key[0] for key in fallback.tracked_keys()} == {"t0", "t8", "t9"}


def test_keys_idle_longer_than_idle_s_all_go_when_the_cap_is_reached() -> None:
    clock = FakeClock()
    fallback = AutoFallback(FallbackPolicy(timeout_s=1.0), clock, max_keys=3, idle_s=10)
    for tenant in ("a", "b", "c"):
        fallback.record((tenant, "p"), ok=True)
    clock.now += 5
    fallback.record(("a", "p"), ok=True)
    clock.now += 6  # b and c idle for 11 s, a for 6 s
    fallback.record(("d", "p"), ok=True)
    assert fallback.tracked_keys() == [("a", "p"), ("d", "p")]


def test_should_trip_is_a_pure_function_of_stats_and_policy() -> None:
    window = SlidingWindow(10, clock=FakeClock())
    policy = FallbackPolicy(timeout_s=1.0, min_samples=2)
    window.add(ok=False)
    assert should_trip(window.stats(), policy) is None
    window.add(ok=True)
    trip = should_trip(window.stats(), policy)
    assert trip is not None and trip.describe() == "error_rate 0.5 >= 0.5 over 2 samples"


def test_set_policy_applies_the_new_window_and_keeps_trips() -> None:
    fallback, clock, _ = make(window_s=300)
    for _ in range(20):
        fallback.record(KEY, ok=False)
    fallback.record(("acme", "other"), ok=True)
    clock.now += 100
    fallback.set_policy(FallbackPolicy(timeout_s=1.0, window_s=60))
    assert fallback.is_tripped(KEY) and fallback.status(("acme", "other"))["window"]["count"] == 0
