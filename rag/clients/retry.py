"""When a client call tries again: pure functions over a :class:`RetryPolicy`, shared by the sync and the
async client (which only sleep and send).

Policy: a refusal with status 429 or 503 is retried, after the server's ``Retry-After`` (seconds or an
HTTP-date) plus a jitter, or after a jittered exponential backoff when the header is absent; a connection
that could not be made is retried (nothing was sent); a connection lost after sending is retried only for
an idempotent call (a query, not feedback). Never more than ``max_attempts`` in all, never a ``Retry-After``
longer than ``max_retry_after_s``, and never a wait that would end past the call's deadline: then the last
error is raised at once, with the reason.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``max_attempts`` counts the first try (1: never retry). The n-th retry's backoff is drawn uniformly
    from ``[0, min(max_backoff_s, backoff_s * 2**(n-1))]`` ("full jitter": clients refused together do not
    come back together); with a ``Retry-After`` the wait is that plus the same draw."""

    max_attempts: int = 3
    backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1 (1 = no retry), got {self.max_attempts}")
        for name in ("backoff_s", "max_backoff_s", "max_retry_after_s"):
            value = getattr(self, name)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"{name} must be a finite number of seconds >= 0, got {value!r}")


NO_RETRY = RetryPolicy(max_attempts=1)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value: delta-seconds (``"3"``, ``"1.5"``) or an
    HTTP-date (``"Wed, 21 Oct 2026 07:28:00 GMT"``, measured from ``now``, a Unix time). Never negative
    (a date in the past is 0). None: no header, or one that is neither."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when: datetime = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # RFC 9110: an HTTP-date is GMT
            return None
        return max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def backoff(policy: RetryPolicy, retry: int, rng: random.Random) -> float:
    """The jittered backoff before the ``retry``-th retry (1 = the first)."""
    cap = min(policy.max_backoff_s, policy.backoff_s * 2 ** min(retry - 1, 30))
    return rng.uniform(0.0, cap)


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """``wait_s`` None: do not retry, for ``reason``; else sleep ``wait_s`` and try again."""

    wait_s: float | None
    reason: str

    @property
    def retry(self) -> bool:
        return self.wait_s is not None


def decide(
    policy: RetryPolicy,
    *,
    attempt: int,
    status: int | None,
    retry_after_s: float | None,
    remaining_s: float,
    rng: random.Random,
    sent: bool = True,
    idempotent: bool = True,
) -> RetryDecision:
    """Whether attempt number ``attempt`` (1 = the first), which failed with HTTP ``status`` (None: no
    answer; ``sent``: the request may have reached the server), is tried again, and after how long.
    ``remaining_s``: the time left before the call's deadline."""
    if status is not None and status not in RETRY_STATUSES:
        return RetryDecision(None, f"status {status} is not retried (only {sorted(RETRY_STATUSES)})")
    if status is None and sent and not idempotent:
        return RetryDecision(None, "the connection failed after sending a call that is not idempotent")
    if attempt >= policy.max_attempts:
        return RetryDecision(None, f"attempts exhausted ({attempt} of {policy.max_attempts})")
    if retry_after_s is not None and retry_after_s > policy.max_retry_after_s:
        return RetryDecision(
            None, f"Retry-After {retry_after_s:g} s is over max_retry_after_s {policy.max_retry_after_s:g} s"
        )
    wait = (retry_after_s or 0.0) + backoff(policy, attempt, rng)
    if wait >= remaining_s:
        return RetryDecision(None, f"waiting {wait:.3g} s would pass the deadline ({remaining_s:.3g} s left)")
    why = f"status {status}" if status is not None else "connection failed"
    after = f"Retry-After {retry_after_s:g} s + " if retry_after_s is not None else ""
    return RetryDecision(wait, f"{why}: retry {attempt} after {after}backoff, {wait:.3g} s in all")
