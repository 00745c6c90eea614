"""Routing decisions awaiting feedback, shared by every process the feedback may reach.

:meth:`PendingDecisions.record` keeps a decision in this process's
:class:`~rag.bandit.decisions.DecisionLog` (which also writes the JSON-lines log) and, with a shared
store, starts writing it there; once the write lands the local copy is dropped, so each decision has one
home. A decision the store did not take (down, busy, breaker open, timeout) stays local, as without one.
:meth:`PendingDecisions.written` waits for that write: the service calls it before answering, so a
feedback sent anywhere after the answer finds the decision. :meth:`PendingDecisions.take` waits for a
write still in flight in this process, then takes from the shared store (read and delete at once: of two
processes taking one decision, one gets it), then from the local log.

The shared store (:class:`SharedDecisions`, one protocol) is chosen by the service:

- :class:`RedisDecisions` when Redis is configured: it spans machines, so feedback reaches any replica;
- :class:`~rag.bandit.pending_sqlite.SqliteDecisions` without Redis: a SQLite file in the data dir, so
  feedback reaches any process on the machine serving that data dir (``rag serve --workers N``, or
  several ``rag serve``), but not a replica on another machine;
- neither (or the store unusable): this process only — its feedback must come back to it.

Both keep the same contract. **Bounded per tenant**: a write past ``max_entries`` drops the tenant's
oldest decisions (the JSON of one is a few hundred bytes, plus the query text when the feedback log
keeps it: at most 2,048 characters, the API's cap). **TTL**: a decision older than ``ttl_s`` is
never returned and is removed at a later write. **Taken once** across processes. **Tenant isolation**:
the tenant is part of the key and a taken decision must name the tenant that asks, so one tenant never
reaches another's decision, whatever request id it sends.

In Redis (keys in :class:`~rag.resilience.redis.RedisKeys.decisions`), per tenant: one key per decision,
``PX`` = the decision TTL, and a sorted set of its request ids by write time, also with that TTL
(refreshed per write); a write past the cap pops the oldest ids and deletes their decisions in the same
script; expired ids leave the set at the next write. Redis failures are counted by the Redis breaker;
nothing here raises them.

Not exactly once in one failure: a Redis write that timed out after it landed leaves a local copy too; if
another replica takes the Redis one, this replica can still take its copy (a second reward for one
answer). SQLite has no such case: a write that fails is rolled back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from collections.abc import Sequence
from typing import Any, Protocol

from rag.bandit.decisions import Decision, DecisionLog
from rag.errors import RagError
from rag.resilience.redis import GuardedRedis, RedisUnavailable

log = logging.getLogger(__name__)


class SharedUnavailable(RagError, RuntimeError):
    """The shared store cannot be used now: the decision stays in (or is looked up in) this process."""


class SharedDecisions(Protocol):
    """Where processes share the decisions awaiting feedback: a decision's JSON (:func:`encode`) keyed
    by (tenant, request id). Each call raises :class:`SharedUnavailable` when the store cannot serve it."""

    async def put(
        self, tenant: str, request_id: str, decision: str, *, ttl_s: float, max_entries: int
    ) -> None:
        """Store ``decision`` (replacing one under the same key) for ``ttl_s``; keep at most
        ``max_entries`` of ``tenant``'s, dropping its oldest."""
        ...

    async def take(self, tenant: str, request_id: str) -> str | bytes | None:
        """The decision stored under (``tenant``, ``request_id``), removed — None if there is none or it
        expired. Of concurrent takers of one decision, in any processes, exactly one gets it."""
        ...

    async def close(self) -> None:
        """Release what the store holds in this process (not the store's contents)."""
        ...


# KEYS: the tenant's index, the decision's key; ARGV: request id, decision JSON, TTL ms, max entries,
# the prefix of the tenant's decision keys. Returns how many older decisions were dropped.
_RECORD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'PX', ttl)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl))
local dropped = 0
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
if excess > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[1], excess)
  for i = 1, #popped, 2 do
    redis.call('DEL', ARGV[5] .. popped[i])
    dropped = dropped + 1
  end
end
redis.call('PEXPIRE', KEYS[1], ttl)
return dropped
"""

# KEYS: the tenant's index, the decision's key; ARGV: request id. The decision (nil: none), removed.
_TAKE = """
local v = redis.call('GET', KEYS[2])
if v then
  redis.call('DEL', KEYS[2])
end
redis.call('ZREM', KEYS[1], ARGV[1])
return v
"""


def encode(decision: Decision) -> str:
    return json.dumps(
        {
            "request_id": decision.request_id,
            "tenant": decision.tenant,
            "arm": decision.arm,
            "features": list(decision.features),
            "propensity": decision.propensity,
            "served": list(decision.served_doc_ids),
            "ts": decision.ts,
            "allowed": None if decision.allowed is None else list(decision.allowed),
            "cost": decision.cost,
            "query": decision.query,
        },
        separators=(",", ":"),
        allow_nan=False,
    )


def decode(raw: str | bytes) -> Decision:
    """A decision from :func:`encode`'s JSON; ValueError when it is not one."""
    try:
        d: dict[str, Any] = json.loads(raw)
        allowed = d["allowed"]
        decision = Decision(
            request_id=str(d["request_id"]),
            tenant=str(d["tenant"]),
            arm=str(d["arm"]),
            features=tuple(float(v) for v in d["features"]),
            propensity=float(d["propensity"]),
            served_doc_ids=tuple(str(v) for v in d["served"]),
            ts=float(d["ts"]),
            allowed=None if allowed is None else tuple(str(a) for a in allowed),
            cost=float(d["cost"]),
            query=str(d.get("query", "")),  # absent in a decision written before the text was kept
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"malformed pending decision: {exc}"[:300]) from None
    if not all(math.isfinite(v) for v in decision.features):
        raise ValueError("malformed pending decision: non-finite features")
    return decision


class RedisDecisions:
    """:class:`SharedDecisions` in Redis (see the module docstring): two scripts, each call through the
    Redis breaker and timeout."""

    def __init__(self, redis: GuardedRedis) -> None:
        self._keys = redis.keys
        self._record = redis.script(_RECORD)
        self._take = redis.script(_TAKE)

    async def put(
        self, tenant: str, request_id: str, decision: str, *, ttl_s: float, max_entries: int
    ) -> None:
        keys = self._keys.decisions(tenant)
        args: list[str | int | float] = [
            request_id,
            decision,
            max(1, math.ceil(ttl_s * 1000)),
            max_entries,
            keys.entry_prefix,
        ]
        try:
            await self._record([keys.index, keys.entry(request_id)], args)
        except RedisUnavailable as exc:
            raise SharedUnavailable(str(exc)) from exc

    async def take(self, tenant: str, request_id: str) -> str | bytes | None:
        keys = self._keys.decisions(tenant)
        try:
            raw: str | bytes | None = await self._take([keys.index, keys.entry(request_id)], [request_id])
        except RedisUnavailable as exc:
            raise SharedUnavailable(str(exc)) from exc
        return raw

    async def close(self) -> None:
        """Nothing: the Redis client is the service's."""


class PendingDecisions:
    def __init__(self, local: DecisionLog, shared: SharedDecisions | None = None) -> None:
        """``local``: this process's log (its ``ttl_s`` is the shared store's TTL, its ``max_entries`` the
        store's cap per tenant); ``shared``: where the decisions are shared (None: in process only)."""
        self.local = local
        self.shared: SharedDecisions | None = shared
        self._writes: dict[tuple[str, str], asyncio.Task[None]] = {}  # in flight, per (tenant, id)

    def share(self, shared: SharedDecisions) -> None:
        """Share the decisions recorded from now on through ``shared``."""
        self.shared = shared

    def __len__(self) -> int:
        """Decisions pending in this process (not those in the shared store)."""
        return len(self.local)

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
        """Keep a served decision until its feedback (see :meth:`DecisionLog.record`); with a shared store,
        start moving it there (:meth:`written` waits for that)."""
        decision = self.local.record(
            request_id,
            tenant,
            arm,
            features,
            propensity,
            served_doc_ids,
            allowed=allowed,
            cost=cost,
            query=query,
        )
        if self.shared is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:  # called outside the event loop: it stays in process
                return decision
            key = (tenant, request_id)
            task = asyncio.create_task(self._move(self.shared, decision, self._writes.get(key)))
            self._writes[key] = task
            task.add_done_callback(lambda t: self._forget_write(key, t))
        return decision

    async def written(self, tenant: str, request_id: str) -> None:
        """Wait until the decision recorded for (``tenant``, ``request_id``) is in the shared store, or
        known to stay here. Cancelling the wait does not cancel the write."""
        task = self._writes.get((tenant, request_id))
        if task is not None:
            await asyncio.shield(task)

    async def take(self, request_id: str, tenant: str) -> Decision | None:
        """``tenant``'s pending decision for ``request_id``, removed wherever it was (the shared store
        first); None if unknown, already taken or expired, or held by a store that cannot be reached now."""
        await self.written(tenant, request_id)
        if self.shared is not None:
            try:
                raw = await self.shared.take(tenant, request_id)
            except SharedUnavailable:
                raw = None
            if raw is not None:
                self.local.take(request_id, tenant)  # a copy left by a write that timed out yet landed
                try:
                    decision = decode(raw)
                except ValueError as exc:
                    log.warning("pending decision %r of %r dropped: %s", request_id, tenant, exc)
                    return None
                if decision.tenant != tenant or decision.request_id != request_id:
                    return None
                return None if self.local.expired(decision) else decision
        return self.local.take(request_id, tenant)

    async def close(self) -> None:
        """Let the writes in flight finish (each is bounded by the store's timeout), release the shared
        store, then close the log."""
        if self._writes:
            await asyncio.gather(*self._writes.values(), return_exceptions=True)
        if self.shared is not None:
            await self.shared.close()
        self.local.close()

    def _forget_write(self, key: tuple[str, str], task: asyncio.Task[None]) -> None:
        if self._writes.get(key) is task:
            del self._writes[key]

    async def _move(
        self, shared: SharedDecisions, decision: Decision, before: asyncio.Task[None] | None
    ) -> None:
        if before is not None:  # the same (tenant, id) recorded again: writes land in record order
            await asyncio.wait([before])
        try:
            await shared.put(
                decision.tenant,
                decision.request_id,
                encode(decision),
                ttl_s=self.local.ttl_s,
                max_entries=self.local.max_entries,
            )
        except (SharedUnavailable, ValueError):  # ValueError: not JSON-safe (a non-finite cost)
            return  # it stays in process: its feedback must come to this process
        self.local.forget(decision)
