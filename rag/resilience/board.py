"""The service's breakers, one per dependency, with their transitions exported as metrics."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping

from rag import metrics
from rag.resilience.breaker import Breaker, BreakerPolicy, State
from rag.resilience.failures import failure_predicate
from rag.types import Dependency

log = logging.getLogger(__name__)

DEPENDENCIES = tuple(d.value for d in Dependency)  # one breaker each (rag.types.Dependency says which)


def _export(breaker: Breaker, old: State, new: State, reason: str) -> None:
    for state in State:
        metrics.BREAKER_STATE.labels(breaker.name, state.value).set(1 if state is new else 0)
    metrics.BREAKER_TRANSITIONS.labels(breaker.name, old.value, new.value).inc()
    log.warning("breaker %s: %s -> %s (%s)", breaker.name, old.value, new.value, reason)


class BreakerBoard(Mapping[str, Breaker]):
    def __init__(self, policies: Mapping[str, BreakerPolicy]) -> None:
        unknown = set(policies) - set(DEPENDENCIES)
        if unknown:
            raise ValueError(f"unknown dependencies {sorted(unknown)}; known: {list(DEPENDENCIES)}")
        self._breakers = {
            name: Breaker(name, policy, is_failure=failure_predicate(name))
            for name, policy in policies.items()
        }
        for breaker in self._breakers.values():
            breaker.add_listener(_export)
            for state in State:
                metrics.BREAKER_STATE.labels(breaker.name, state.value).set(1 if state is State.CLOSED else 0)

    def __getitem__(self, name: str) -> Breaker:
        return self._breakers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._breakers)

    def __len__(self) -> int:
        return len(self._breakers)

    def snapshot(self) -> list[dict[str, object]]:
        return [b.snapshot() for b in self._breakers.values()]
