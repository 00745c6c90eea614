"""The retry policy as pure functions: Retry-After in both forms, the jittered backoff's bounds, and each
reason not to retry (status, attempts, a too-long Retry-After, the deadline, a non-idempotent call)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from rag.clients.retry import RetryPolicy, backoff, decide, parse_retry_after

NOW = datetime(2026, 11, 29, 15, 0, 0, tzinfo=UTC).timestamp()


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("3", now=NOW) == 3.0
    assert parse_retry_after(" 1.5 ", now=NOW) == 1.5
    later = format_datetime(datetime(2026, 11, 29, 15, 0, 7, tzinfo=UTC), usegmt=True)
    assert later == "Sun, 29 Nov 2026 15:00:07 GMT"
    assert parse_retry_after(later, now=NOW) == 7.0
    assert parse_retry_after("Sun, 29 Nov 2026 14:59:00 GMT", now=NOW) == 0.0  # a date past: at once
    for unreadable in (None, "", "soon", "-1", "nan", "inf", "Sun, 29 Nov 2026 15:00:07"):  # no zone
        assert parse_retry_after(unreadable, now=NOW) is None, unreadable


def test_backoff_is_full_jitter_under_a_doubling_cap() -> None:
    policy = RetryPolicy(backoff_s=0.1, max_backoff_s=1.0)
    rng = random.Random(7)
    for retry, cap in ((1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (60, 1.0)):
        draws = [backoff(policy, retry, rng) for _ in range(200)]
        assert all(0.0 <= d <= cap for d in draws)
        assert max(draws) > cap * 0.8 and min(draws) < cap * 0.2  # spread over the range, not fixed


def _decide(**kw: object) -> object:
    args: dict[str, object] = {
        "attempt": 1,
        "status": 429,
        "retry_after_s": None,
        "remaining_s": 30.0,
        "rng": random.Random(1),
    }
    args.update(kw)
    return decide(RetryPolicy(max_attempts=3, backoff_s=0.2), **args)  # type: ignore[arg-type]


def test_a_retry_waits_at_least_retry_after_plus_a_bounded_jitter() -> None:
    for seed in range(50):
        d = _decide(retry_after_s=2.0, rng=random.Random(seed))
        assert d.retry and 2.0 <= d.wait_s <= 2.2  # type: ignore[attr-defined]
    assert _decide(status=503).retry  # type: ignore[attr-defined]
    assert _decide(status=None, sent=False, idempotent=False).retry  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"status": 500}, "status 500 is not retried"),
        ({"status": 422}, "status 422 is not retried"),
        ({"attempt": 3}, "attempts exhausted (3 of 3)"),
        ({"retry_after_s": 120.0}, "Retry-After 120 s is over max_retry_after_s 60 s"),
        ({"retry_after_s": 5.0, "remaining_s": 4.0}, "would pass the deadline"),
        ({"status": None, "idempotent": False}, "not idempotent"),
    ],
)
def test_each_reason_not_to_retry(kw: dict[str, object], reason: str) -> None:
    d = _decide(**kw)
    assert not d.retry and reason in d.reason  # type: ignore[attr-defined]


def test_a_policy_refuses_values_out_of_range_naming_them() -> None:
    with pytest.raises(ValueError, match=r"max_attempts must be at least 1 .* got 0"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match=r"backoff_s must be a finite number of seconds >= 0, got -1"):
        RetryPolicy(backoff_s=-1)
