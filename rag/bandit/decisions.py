"""What the bandit decided for each served query, until its feedback arrives — and a propensity log.

When the service serves a query with a bandit-chosen plan it records the decision (context, arm,
propensity, the doc ids it served) with :meth:`DecisionLog.record`. ``POST /feedback`` later takes it
with :meth:`DecisionLog.take` by tenant and request id — once: a second feedback for the same request
finds nothing — turns the feedback into a reward against the served ids, updates the bandit and appends
the reward with :meth:`DecisionLog.log_reward`.

Pending decisions are keyed by (tenant, request id): the request id may come from the client
(``X-Request-ID``), so one tenant reusing another's id neither replaces nor reaches the other's decision.
They are held in memory, bounded (the oldest are dropped past ``max_entries``) and for
``ttl_s`` at most (feedback later than that is ignored). With ``log_path`` every decision and every reward
is also appended to a JSON-lines file, one object per line:

    {"type": "decision", "ts", "request_id", "tenant", "arm", "propensity", "features", "served", "allowed"}
    {"type": "reward", "ts", "request_id", "tenant", "arm", "propensity", "reward", ...extra}

which is what offline replay and inverse-propensity (IPS) evaluation of another policy need;
:func:`ips_estimate` is that estimate.

This log holds pending decisions in this process. With a shared store (Redis, or without it a SQLite
file in the data dir), :class:`~rag.bandit.pending.PendingDecisions` moves each one there once written
(any process sharing the store can then take it) and keeps here only those the store could not take, so
feedback reaches any replica (Redis) or any process on the machine (SQLite); the JSON-lines file stays
per process (each logs the decisions it made and the rewards it applied).

Not thread-safe: the service calls it from its event loop only. Log lines are written and flushed
synchronously (a few hundred bytes each).
"""

from __future__ import annotations

import json
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any


@dataclass(frozen=True, slots=True)
class Decision:
    request_id: str
    tenant: str
    arm: str
    features: tuple[float, ...]
    propensity: float
    served_doc_ids: tuple[str, ...]
    ts: float  # clock time it was recorded
    allowed: tuple[str, ...] | None = None  # the arms the policy chose among (None: all)
    cost: float = 0.0  # what serving it cost (e.g. CPU-seconds): the reward is net of it
    query: str = ""  # the query text, kept so its feedback can become training data (not in the log file)


class DecisionLog:
    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        ttl_s: float = 3600.0,
        log_path: str | Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        if not (math.isfinite(ttl_s) and ttl_s > 0):
            raise ValueError(f"ttl_s must be a finite number > 0, got {ttl_s}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self.log_path = None if log_path is None else Path(log_path)
        self._clock = clock
        self._pending: OrderedDict[tuple[str, str], Decision] = OrderedDict()  # (tenant, id), oldest first
        self._fh: IO[str] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def record(
        self,
        request_id: str,
        tenant: str,
        arm: str,
        features: Sequence[float],
        propensity: float,
        served_doc_ids: Sequence[str],
        *,
        allowed: Sequence[str] | None = None,
        cost: float = 0.0,
        query: str = "",
    ) -> Decision:
        """Remember a served decision until its feedback (or ``ttl_s``) and log it (``query``, the text
        the decision answered, is kept with it but not written to the JSON-lines log)."""
        if not request_id:
            raise ValueError("request_id must be a non-empty string")
        if not 0.0 < propensity <= 1.0:
            raise ValueError(f"propensity must be in (0, 1], got {propensity}")
        now = self._clock()
        decision = Decision(
            request_id=request_id,
            tenant=tenant,
            arm=arm,
            features=tuple(float(v) for v in features),
            propensity=float(propensity),
            served_doc_ids=tuple(served_doc_ids),
            ts=now,
            allowed=None if allowed is None else tuple(allowed),
            cost=float(cost),
            query=query,
        )
        key = (tenant, request_id)
        self._pending.pop(key, None)  # a tenant's repeated id replaces its earlier decision, as the newest
        self._pending[key] = decision
        self._drop_expired(now)
        while len(self._pending) > self.max_entries:
            self._pending.popitem(last=False)
        self._write(
            {
                "type": "decision",
                "ts": now,
                "request_id": request_id,
                "tenant": tenant,
                "arm": arm,
                "propensity": decision.propensity,
                "features": list(decision.features),
                "served": list(decision.served_doc_ids),
                "allowed": None if allowed is None else list(allowed),
            }
        )
        return decision

    def take(self, request_id: str, tenant: str) -> Decision | None:
        """``tenant``'s pending decision for ``request_id``, removed; None if unknown, already taken or
        expired. A decision recorded for another tenant under the same id is not found (and stays): one
        tenant cannot spend, or learn from, another's decisions."""
        decision = self._pending.pop((tenant, request_id), None)
        if decision is None:
            return None
        return None if self._expired(decision, self._clock()) else decision

    def forget(self, decision: Decision) -> bool:
        """Drop ``decision`` if it is still the one pending for its (tenant, request id) — it now lives
        elsewhere (Redis); a newer decision recorded under the same id stays. Whether it was dropped."""
        key = (decision.tenant, decision.request_id)
        if self._pending.get(key) is not decision:
            return False
        del self._pending[key]
        return True

    def expired(self, decision: Decision) -> bool:
        """Whether ``decision`` is older than ``ttl_s`` (by this log's clock)."""
        return self._expired(decision, self._clock())

    def log_reward(self, decision: Decision, reward: float, **extra: Any) -> None:
        """Append the reward line for a taken decision (``extra``: e.g. quality, cost, the signal used)."""
        self._write(
            {
                **extra,
                "type": "reward",
                "ts": self._clock(),
                "request_id": decision.request_id,
                "tenant": decision.tenant,
                "arm": decision.arm,
                "propensity": decision.propensity,
                "reward": float(reward),
            }
        )

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def _expired(self, decision: Decision, now: float) -> bool:
        return now - decision.ts > self.ttl_s

    def _drop_expired(self, now: float) -> None:
        # entries are kept in record order, so the expired ones are at the front
        while self._pending:
            oldest = next(iter(self._pending.values()))
            if not self._expired(oldest, now):
                break
            self._pending.popitem(last=False)

    def _write(self, line: dict[str, Any]) -> None:
        if self.log_path is None:
            return
        if self._fh is None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.log_path.open("a", encoding="utf-8")
        self._fh.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._fh.flush()


def ips_estimate(
    rewards: Sequence[float], logged_propensities: Sequence[float], target_probs: Sequence[float]
) -> tuple[float, float]:
    """Off-policy value of a target policy from logged decisions: (IPS, self-normalised IPS).

    For logged decision i, ``rewards[i]`` is the reward the logged arm earned, ``logged_propensities[i]``
    the probability the logging policy had of picking it and ``target_probs[i]`` the probability the
    target policy would pick that same arm in that context. IPS = mean(r·π/p) is unbiased when p > 0
    wherever π > 0; SNIPS = Σ r·π/p / Σ π/p trades a little bias for much less variance."""
    n = len(rewards)
    if n == 0 or len(logged_propensities) != n or len(target_probs) != n:
        raise ValueError(
            f"need as many rewards, logged propensities and target probabilities (at least one), got "
            f"{n}, {len(logged_propensities)}, {len(target_probs)}"
        )
    if any(not 0.0 < p <= 1.0 for p in logged_propensities):
        raise ValueError("logged propensities must be in (0, 1]")
    if any(not 0.0 <= q <= 1.0 for q in target_probs):
        raise ValueError("target probabilities must be in [0, 1]")
    weights = [q / p for q, p in zip(target_probs, logged_propensities, strict=True)]
    weighted = sum(w * r for w, r in zip(weights, rewards, strict=True))
    total = sum(weights)
    return weighted / n, (weighted / total if total > 0 else 0.0)
