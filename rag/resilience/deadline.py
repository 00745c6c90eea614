"""Per-request deadlines and the step-cost estimates that split them across steps.

A request gets ``RAG_DEADLINE_MS``. Before a step starts, the pipeline asks whether the step's estimated
cost fits in what is left after reserving time for the steps that must follow; one that does not fit is
skipped (a degradation), not started and abandoned. A step that starts gets the time left as its timeout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class Deadline:
    budget_s: float
    clock: Callable[[], float] = time.monotonic
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.budget_s <= 0:
            raise ValueError(f"deadline budget must be > 0 s, got {self.budget_s}")
        if self.started < 0:
            self.started = self.clock()

    @classmethod
    def after_ms(cls, ms: float) -> Deadline:
        return cls(ms / 1000.0)

    def elapsed_s(self) -> float:
        return self.clock() - self.started

    def remaining_s(self) -> float:
        return self.budget_s - self.elapsed_s()

    def fits(self, cost_s: float, *, reserve_s: float = 0.0) -> bool:
        """Whether a step estimated at ``cost_s`` can finish with ``reserve_s`` still left afterwards."""
        return cost_s + reserve_s <= self.remaining_s()

    def timeout_s(self, *, reserve_s: float = 0.0) -> float:
        """The timeout for a step that must leave ``reserve_s`` for the steps after it (never negative)."""
        return max(self.remaining_s() - reserve_s, 0.0)


def ewma(previous: float | None, observed: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first observation starts it."""
    return observed if previous is None else (1.0 - alpha) * previous + alpha * observed


class StepCosts:
    """Running estimates of each step's wall time (per unit of work, e.g. per reranked pair), fed by the
    steps that finish. Steps never seen estimate 0: they are tried, bounded by their timeout."""

    def __init__(self, alpha: float = 0.2) -> None:
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self._per_unit_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def observe(self, step: str, seconds: float, units: int = 1) -> None:
        if units <= 0:
            return
        with self._lock:
            self._per_unit_s[step] = ewma(self._per_unit_s.get(step), seconds / units, self.alpha)

    def estimate_s(self, step: str, units: int = 1) -> float:
        return self._per_unit_s.get(step, 0.0) * units

    def steps(self) -> list[str]:
        with self._lock:
            return list(self._per_unit_s)

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {step: round(s * 1000.0, 3) for step, s in self._per_unit_s.items()}
