"""Auto-fallback: a candidate path (a flag's variant, a new pipeline) that misbehaves for a tenant goes back
to the baseline for that tenant, and stays there until an admin resets it.

Each key ``(tenant, path)`` keeps a :class:`SlidingWindow` of the candidate's outcomes over the last
``window_s`` seconds. Once the window holds ``min_samples`` outcomes, the key **trips** when the error
rate reaches ``error_rate``, the timeout rate reaches ``timeout_rate``, or the mean latency reaches
``latency_ratio`` x ``timeout_s`` (the request deadline). A tripped key is *latched*: it stays on the
baseline even after the window recovers (the candidate gets no traffic, so there is nothing to recover
from), until :meth:`AutoFallback.reset` or :meth:`AutoFallback.reset_all` (an admin action, after a fix).
A reset starts the key with an empty window.

Memory is bounded twice: a window aggregates outcomes into ``bucket_s`` (1 s) buckets, so it holds at
most ``window_s / bucket_s + 1`` buckets whatever the traffic; and :class:`AutoFallback` tracks at most
``max_keys`` keys, evicting keys idle for more than ``idle_s`` and then the least recently used ones that
are not tripped (losing only their partial window); a tripped key is evicted only when every tracked key
is tripped (logged as a warning).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (tenant, path or flag name)
Threshold = Literal["error_rate", "timeout_rate", "mean_latency_s"]


@dataclass(frozen=True, slots=True)
class WindowStats:
    count: int
    errors: int  # outcomes that were not ok; a timeout is an error too
    timeouts: int
    error_rate: float  # 0 when the window is empty
    timeout_rate: float
    mean_latency_s: float


@dataclass(slots=True)
class _Bucket:
    start: float
    count: int = 0
    errors: int = 0
    timeouts: int = 0
    latency_sum_s: float = 0.0


def window_stats(count: int, errors: int, timeouts: int, latency_sum_s: float) -> WindowStats:
    """Rates and mean of summed counts; zeros for an empty window (never NaN)."""
    if count == 0:
        return WindowStats(0, 0, 0, 0.0, 0.0, 0.0)
    return WindowStats(count, errors, timeouts, errors / count, timeouts / count, latency_sum_s / count)


class SlidingWindow:
    """Outcomes of the last ``window_s`` seconds, summed per ``bucket_s`` bucket. A bucket leaves the
    window once its start is ``window_s`` old, so an outcome counts for between ``window_s - bucket_s``
    and ``window_s`` seconds."""

    def __init__(
        self, window_s: float = 300.0, *, bucket_s: float = 1.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not window_s > 0 or not bucket_s > 0 or bucket_s > window_s:
            raise ValueError(f"need 0 < bucket_s <= window_s, got bucket_s={bucket_s}, window_s={window_s}")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._clock = clock
        self._buckets: deque[_Bucket] = deque()

    def _evict(self, now: float) -> None:
        while self._buckets and self._buckets[0].start <= now - self.window_s:
            self._buckets.popleft()

    def add(self, ok: bool, timed_out: bool = False, latency_s: float = 0.0) -> None:
        if not math.isfinite(latency_s) or latency_s < 0:
            raise ValueError(f"latency_s must be a finite number >= 0, got {latency_s}")
        now = self._clock()
        self._evict(now)
        start = math.floor(now / self.bucket_s) * self.bucket_s
        if not self._buckets or self._buckets[-1].start < start:
            self._buckets.append(_Bucket(start))
        last = self._buckets[-1]
        last.count += 1
        last.errors += int(not ok or timed_out)
        last.timeouts += int(timed_out)
        last.latency_sum_s += latency_s

    def stats(self) -> WindowStats:
        self._evict(self._clock())
        return window_stats(
            sum(b.count for b in self._buckets),
            sum(b.errors for b in self._buckets),
            sum(b.timeouts for b in self._buckets),
            sum(b.latency_sum_s for b in self._buckets),
        )

    def clear(self) -> None:
        self._buckets.clear()

    def __len__(self) -> int:
        """Buckets held (the memory bound), not outcomes."""
        return len(self._buckets)


@dataclass(frozen=True, slots=True)
class FallbackPolicy:
    timeout_s: float  # the request deadline; the latency limit is latency_ratio x timeout_s
    window_s: float = 300.0
    error_rate: float = 0.5
    timeout_rate: float = 0.3
    latency_ratio: float = 0.8
    min_samples: int = 20  # fewer outcomes in the window never trip

    def __post_init__(self) -> None:
        for name in ("error_rate", "timeout_rate"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        for name in ("timeout_s", "window_s", "latency_ratio"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {value}")
        if self.min_samples < 1:
            raise ValueError(f"min_samples must be >= 1, got {self.min_samples}")

    @property
    def latency_limit_s(self) -> float:
        return self.latency_ratio * self.timeout_s


@dataclass(frozen=True, slots=True)
class Trip:
    threshold: Threshold
    value: float
    limit: float
    samples: int

    def describe(self) -> str:
        return f"{self.threshold} {self.value:.3g} >= {self.limit:.3g} over {self.samples} samples"


def should_trip(stats: WindowStats, policy: FallbackPolicy) -> Trip | None:
    """The first threshold the window crosses (errors, then timeouts, then latency), or None."""
    if stats.count < policy.min_samples:
        return None
    checks: list[tuple[Threshold, float, float]] = [
        ("error_rate", stats.error_rate, policy.error_rate),
        ("timeout_rate", stats.timeout_rate, policy.timeout_rate),
        ("mean_latency_s", stats.mean_latency_s, policy.latency_limit_s),
    ]
    for threshold, value, limit in checks:
        if value >= limit:
            return Trip(threshold, value, limit, stats.count)
    return None


@dataclass(frozen=True, slots=True)
class FallbackEvent:
    """What listeners get: a key tripped (``trip`` set) or was reset by an admin (``trip`` is the one
    that was cleared)."""

    key: Key
    kind: Literal["tripped", "reset"]
    trip: Trip | None
    stats: WindowStats


Listener = Callable[[FallbackEvent], None]


@dataclass(slots=True)
class _KeyState:
    window: SlidingWindow
    last_seen: float
    trip: Trip | None = None
    since: float = 0.0  # clock() at the trip
    since_unix: float = 0.0  # wall time at the trip, for humans


class AutoFallback:
    """Per (tenant, path) windows and latched trips. Per query: ``is_tripped(key)`` before choosing the
    candidate, ``record(key, ...)`` after running it."""

    def __init__(
        self,
        policy: FallbackPolicy,
        clock: Callable[[], float] = time.monotonic,
        *,
        wall_clock: Callable[[], float] = time.time,
        max_keys: int = 10_000,
        idle_s: float | None = None,
    ) -> None:
        """``idle_s``: untracked after this long without an outcome (untripped keys only; default twice
        the window)."""
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys}")
        self.policy = policy
        self.clock = clock
        self.wall_clock = wall_clock
        self.max_keys = max_keys
        self.idle_s = idle_s
        self.listeners: list[Listener] = []
        self._keys: OrderedDict[Key, _KeyState] = OrderedDict()

    # -- per query -----------------------------------------------------------------------------------
    def is_tripped(self, key: Key) -> bool:
        state = self._keys.get(key)
        return state is not None and state.trip is not None

    def record(self, key: Key, ok: bool, timed_out: bool = False, latency_s: float = 0.0) -> Trip | None:
        """Add one outcome of the candidate path; returns the trip if this outcome tripped the key."""
        now = self.clock()
        state = self._keys.get(key)
        if state is None:
            state = _KeyState(SlidingWindow(self.policy.window_s, clock=self.clock), now)
            self._keys[key] = state
            self._bound(now, keep=key)
        state.last_seen = now
        self._keys.move_to_end(key)
        state.window.add(ok, timed_out, latency_s)
        if state.trip is not None:
            return None
        trip = should_trip(state.window.stats(), self.policy)
        if trip is None:
            return None
        state.trip, state.since, state.since_unix = trip, now, self.wall_clock()
        log.warning("auto-fallback: %s/%s back to the baseline: %s", key[0], key[1], trip.describe())
        self._notify(FallbackEvent(key, "tripped", trip, state.window.stats()))
        return trip

    # -- admin ---------------------------------------------------------------------------------------
    def reset(self, key: Key) -> bool:
        """Put a tripped key back on the candidate with an empty window; False if it was not tripped."""
        state = self._keys.get(key)
        if state is None or state.trip is None:
            return False
        cleared, stats = state.trip, state.window.stats()
        state.trip = None
        state.window.clear()
        log.warning("auto-fallback: %s/%s reset by an admin (was %s)", key[0], key[1], cleared.describe())
        self._notify(FallbackEvent(key, "reset", cleared, stats))
        return True

    def reset_all(self) -> int:
        """Reset every tripped key; returns how many were tripped."""
        return sum(self.reset(key) for key in list(self._keys))

    def set_policy(self, policy: FallbackPolicy) -> None:
        """Apply a new policy (config reload). Windows keep their outcomes under the new ``window_s``;
        trips stay latched."""
        self.policy = policy
        for state in self._keys.values():
            state.window.window_s = policy.window_s

    def status(self, key: Key) -> dict[str, Any]:
        """JSON-ready: the window's stats, whether tripped, since when, and which threshold at what value."""
        state = self._keys.get(key)
        stats = state.window.stats() if state else window_stats(0, 0, 0, 0.0)
        trip = state.trip if state else None
        out: dict[str, Any] = {"tenant": key[0], "path": key[1], "tripped": trip is not None}
        out["window"] = asdict(stats)
        if state is not None and trip is not None:
            out["since_unix"] = state.since_unix
            out["tripped_for_s"] = round(self.clock() - state.since, 3)
            out["threshold"], out["value"], out["limit"] = trip.threshold, trip.value, trip.limit
            out["reason"] = trip.describe()
        return out

    def all_status(self) -> list[dict[str, Any]]:
        """Every tracked key's status, tripped ones first."""
        rows = [self.status(key) for key in self._keys]
        return sorted(rows, key=lambda r: (not r["tripped"], r["tenant"], r["path"]))

    def tripped(self) -> list[Key]:
        return [key for key, state in self._keys.items() if state.trip is not None]

    def tracked_keys(self) -> list[Key]:
        """The tracked keys, least recently recorded first."""
        return list(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    # -- internals -----------------------------------------------------------------------------------
    def _bound(self, now: float, keep: Key) -> None:
        """Keep at most ``max_keys`` keys: idle untripped ones go first, then the least recently used
        untripped ones, and tripped ones only when nothing else is left."""
        if len(self._keys) <= self.max_keys:
            return
        idle_s = self.idle_s if self.idle_s is not None else 2 * self.policy.window_s
        for key in [k for k, s in self._keys.items() if s.trip is None and now - s.last_seen > idle_s]:
            if key != keep:
                del self._keys[key]
        untripped = (k for k, s in list(self._keys.items()) if s.trip is None and k != keep)
        while len(self._keys) > self.max_keys:
            victim = next(untripped, None)
            if victim is None:
                victim = next(k for k in self._keys if k != keep)
                log.warning("auto-fallback: %d keys all tripped; forgetting %s/%s", self.max_keys, *victim)
            del self._keys[victim]

    def _notify(self, event: FallbackEvent) -> None:
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:
                log.exception("auto-fallback listener %r failed on %s", listener, event.kind)
