"""The L2 entries one process holds, for every tenant: the query vectors by namespace (the spaces the
neighbour search runs over) and, without a shared Redis, the answers themselves.

Everything here is bounded, whatever clients send (see :class:`L2Limits`):

- per namespace: ``namespace_entries`` queries (oldest evicted first);
- per tenant: ``spaces`` namespaces (the least recently used dropped with its entries), and a share of
  the overall entry and byte caps (``tenant_share``), so one tenant cannot evict every other's entries;
- overall: ``entries`` and ``bytes``, and ``tenants`` tenants (the least recently used forgotten).

An entry's bytes are estimated without walking objects: the serialised answer's length (when held), the
query text's size and the vector's, plus a fixed overhead per entry. An answer goes with its vector: the
one place that evicts (:meth:`L2Entries._evict`) removes both, and the ids of the entries held are the
only ids remembered (what the Redis stream brings back again after an eviction is simply re-read).

Only the index version being served is kept (:meth:`serve_version`, with the index's identity key,
:attr:`rag.cache.keys.IndexIdentity.key`): spaces of another version are dropped and entries of another
version are refused. The service may announce a version from any thread;
it is applied by the next call on the event loop, which owns everything else here.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from rag.cache.vectors import CachedQuery, Neighbour, QueryVectors

ENTRY_OVERHEAD_BYTES = 400  # dict slots, the CachedQuery, the id string: measured ~300-350 on CPython 3.12


@dataclass(frozen=True, slots=True)
class L2Limits:
    namespace_entries: int = 10_000
    entries: int = 100_000
    bytes: int = 64 * 1024 * 1024
    tenant_share: float = 0.5
    spaces: int = 64  # per tenant
    tenants: int = 1000

    def __post_init__(self) -> None:
        for name in ("namespace_entries", "entries", "bytes", "spaces", "tenants"):
            if getattr(self, name) < 1:
                raise ValueError(f"L2 limit {name} must be at least 1, got {getattr(self, name)}")
        if not 0.0 < self.tenant_share <= 1.0:
            raise ValueError(f"L2 limit tenant_share must be in (0, 1], got {self.tenant_share}")

    @property
    def tenant_entries(self) -> int:
        return max(1, int(self.entries * self.tenant_share))

    @property
    def tenant_bytes(self) -> int:
        return max(1, int(self.bytes * self.tenant_share))


@dataclass(frozen=True, slots=True)
class Held:
    tenant: str
    digest: str
    size: int
    expires_at: float
    payload: str | None  # the serialised answer (None: it lives in Redis)


@dataclass(slots=True)
class TenantEntries:
    """One tenant's spaces, its entries (oldest first) and its cursor in the shared stream."""

    generation: str = "0"
    last_id: str = "-"  # last stream entry read
    synced_at: float = float("-inf")
    spaces: OrderedDict[str, QueryVectors] = field(default_factory=OrderedDict)  # least recently used first
    versions: dict[str, str] = field(default_factory=dict)  # namespace digest -> index version
    entries: dict[str, None] = field(default_factory=dict)  # ids, oldest first
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class L2Stats:
    entries: int
    bytes: int
    spaces: int
    tenants: int


class L2Entries:
    def __init__(self, dim: int, limits: L2Limits) -> None:
        self.dim = dim
        self.limits = limits
        self._tenants: OrderedDict[str, TenantEntries] = OrderedDict()  # least recently used first
        self._held: dict[str, Held] = {}  # every entry, oldest first
        self._bytes = 0
        self._served: str | None = None
        self._applied: str | None = None

    # -- the served version --------------------------------------------------------------------------
    def serve_version(self, version: str) -> None:
        """From now on only ``version`` is served: safe to call from any thread (one assignment)."""
        self._served = version

    def _settle(self) -> None:
        served = self._served
        if served is None or served == self._applied:
            return
        self._applied = served
        for tenant in self._tenants.values():
            for digest in [d for d, v in tenant.versions.items() if v != served]:
                self._drop_space(tenant, digest)

    def serves(self, version: str) -> bool:
        served = self._served
        return served is None or served == version

    # -- tenants -------------------------------------------------------------------------------------
    def tenant(self, name: str) -> TenantEntries:
        """The tenant's state (created if new; the least recently used tenant is forgotten past the cap)."""
        self._settle()
        state = self._tenants.get(name)
        if state is None:
            while len(self._tenants) >= self.limits.tenants:
                self.forget(next(iter(self._tenants)))
            state = self._tenants[name] = TenantEntries()
        else:
            self._tenants.move_to_end(name)
        return state

    def forget(self, name: str) -> TenantEntries | None:
        """Drop everything held for the tenant (its stream cursor too)."""
        state = self._tenants.get(name)
        if state is None:
            return None
        for digest in list(state.spaces):
            self._drop_space(state, digest)
        return self._tenants.pop(name)

    def reset(self, name: str, generation: str) -> TenantEntries:
        """Start the tenant over at ``generation`` (a purge seen through Redis)."""
        self.forget(name)
        state = self.tenant(name)
        state.generation = generation
        return state

    # -- entries -------------------------------------------------------------------------------------
    def holds(self, entry_id: str) -> bool:
        return entry_id in self._held

    def add(
        self,
        name: str,
        digest: str,
        version: str,
        query: CachedQuery,
        vector: np.ndarray,
        payload: str | None = None,
    ) -> bool:
        """Hold ``query`` (and its serialised answer when given); False when it is not held: a version
        not served, an id already held, or larger than a tenant's share of the byte cap."""
        if not self.serves(version) or query.entry_id in self._held:
            return False
        limits = self.limits
        size = (
            ENTRY_OVERHEAD_BYTES
            + 4 * self.dim
            + sys.getsizeof(query.text)
            + (len(payload) if payload is not None else 0)
        )
        if size > limits.tenant_bytes:
            return False
        tenant = self.tenant(name)
        space = tenant.spaces.get(digest)
        if space is None:
            while len(tenant.spaces) >= limits.spaces:
                self._drop_space(tenant, next(iter(tenant.spaces)))
            space = tenant.spaces[digest] = QueryVectors(self.dim, limits.namespace_entries)
            tenant.versions[digest] = version
        else:
            tenant.spaces.move_to_end(digest)
        while space.full:
            self._evict(space.oldest())  # type: ignore[arg-type]  # full: not empty
        while len(tenant.entries) >= limits.tenant_entries or tenant.bytes + size > limits.tenant_bytes:
            self._evict(next(iter(tenant.entries)))
        while len(self._held) >= limits.entries or self._bytes + size > limits.bytes:
            self._evict(next(iter(self._held)))
        if tenant.spaces.get(digest) is not space:  # emptied by the evictions above: it was dropped
            tenant.spaces[digest] = space
            tenant.versions[digest] = version
        space.add(query, vector)
        self._held[query.entry_id] = Held(name, digest, size, query.expires_at, payload)
        tenant.entries[query.entry_id] = None
        tenant.bytes += size
        self._bytes += size
        return True

    def payload(self, entry_id: str) -> str | None:
        held = self._held.get(entry_id)
        return held.payload if held is not None else None

    def remove(self, entry_id: str) -> None:
        if entry_id in self._held:
            self._evict(entry_id)

    def nearest(
        self, name: str, digest: str, vector: np.ndarray, *, threshold: float, now: float, limit: int = 5
    ) -> list[Neighbour]:
        self._settle()
        tenant = self._tenants.get(name)
        space = tenant.spaces.get(digest) if tenant is not None else None
        if tenant is None or space is None:
            return []
        self._tenants.move_to_end(name)
        tenant.spaces.move_to_end(digest)
        return space.nearest(vector, threshold=threshold, limit=limit, now=now)

    def prune(self, now: float, *, limit: int = 64) -> None:
        """Evict up to ``limit`` expired entries from the oldest end (entries arrive in roughly expiry
        order; one that expires out of order is skipped at lookup until it reaches the oldest end)."""
        self._settle()
        for _ in range(limit):
            oldest = next(iter(self._held), None)
            if oldest is None or self._held[oldest].expires_at > now:
                return
            self._evict(oldest)

    def stats(self, name: str | None = None) -> L2Stats:
        self._settle()
        if name is None:
            spaces = sum(len(t.spaces) for t in self._tenants.values())
            return L2Stats(len(self._held), self._bytes, spaces, len(self._tenants))
        tenant = self._tenants.get(name)
        if tenant is None:
            return L2Stats(0, 0, 0, 0)
        return L2Stats(len(tenant.entries), tenant.bytes, len(tenant.spaces), 1)

    # -- the one place that evicts -------------------------------------------------------------------
    def _evict(self, entry_id: str) -> None:
        held = self._held.pop(entry_id)
        self._bytes -= held.size
        tenant = self._tenants[held.tenant]
        del tenant.entries[entry_id]
        tenant.bytes -= held.size
        space = tenant.spaces[held.digest]
        space.remove(entry_id)
        if not len(space):
            del tenant.spaces[held.digest]
            del tenant.versions[held.digest]

    def _drop_space(self, tenant: TenantEntries, digest: str) -> None:
        space = tenant.spaces[digest]
        while len(space):
            self._evict(space.oldest())  # type: ignore[arg-type]  # not empty
        tenant.spaces.pop(digest, None)  # an empty space is dropped by the last eviction already
        tenant.versions.pop(digest, None)
