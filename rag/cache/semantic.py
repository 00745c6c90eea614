"""The query cache: L1 exact (in process) and L2 semantic (shared through Redis when configured).

L2 finds a cached query of the same namespace (tenant, index version, model, parameters) whose embedding
is within ``threshold`` cosine similarity of the new query's, and which the lexical guard
(:mod:`rag.cache.guard`) accepts. Each process keeps the vectors of the cached queries it knows of
(:class:`~rag.cache.vectors.QueryVectors`); with Redis, the answers live there with a TTL and every new
entry is appended to a per-tenant stream that the other replicas read on their next lookup, so an answer
cached through one replica is found through another.

Purging a tenant bumps its *generation* (in Redis when configured): every replica that syncs sees the new
generation and drops what it held for the tenant; the old entries expire by their TTL.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.cache.guard import IdfFn, check
from rag.cache.keys import Namespace
from rag.cache.l1 import LruTtl
from rag.cache.vectors import CachedQuery, QueryVectors
from rag.resilience.guarded_redis import GuardedRedis, RedisUnavailable
from rag.text.analyzer import Analyzer

PREFIX = "rag:cache"

# One round trip per sync: the tenant's generation and the stream entries after the last one seen.
_SYNC = """
local gen = redis.call('GET', KEYS[1]) or '0'
local log = ARGV[1] .. gen
local start = ARGV[2]
if ARGV[3] ~= gen then start = '-' end
return {gen, redis.call('XRANGE', log, start, '+', 'COUNT', ARGV[4])}
"""


@dataclass(frozen=True, slots=True)
class CacheHit:
    answer: dict[str, Any]
    level: str  # "l1" | "l2"
    similarity: float = 1.0


@dataclass(slots=True)
class _Tenant:
    """What this process knows of one tenant's L2 entries."""

    generation: str = "0"
    last_id: str = "-"  # last stream entry read
    synced_at: float = float("-inf")
    spaces: dict[str, QueryVectors] = field(default_factory=dict)  # by namespace digest
    answers: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)  # without Redis
    known: set[str] = field(default_factory=set)


def _tenant_keys(tenant: str) -> tuple[str, str, str]:
    tag = f"{PREFIX}:{{{tenant}}}"  # a hash tag: one tenant's keys live on one cluster slot
    return f"{tag}:gen", f"{tag}:log:", f"{tag}:e:"


class QueryCache:
    def __init__(
        self,
        *,
        dim: int,
        analyzer: Analyzer,
        threshold: float,
        ttl_s: float,
        l1_entries: int = 10_000,
        l2_entries: int = 10_000,
        rare_idf: float = 4.0,
        redis: GuardedRedis | None = None,
        sync_interval_s: float = 1.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"cache threshold must be in (0, 1], got {threshold}")
        self.dim = dim
        self.analyzer = analyzer
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.l2_entries = l2_entries
        self.rare_idf = rare_idf
        self.redis = redis
        self.sync_interval_s = sync_interval_s
        self._wall = wall
        self.l1: LruTtl[dict[str, Any]] = LruTtl(l1_entries, ttl_s)
        self._tenants: dict[str, _Tenant] = {}
        self._sync_script = redis.client.register_script(_SYNC) if redis is not None else None

    # -- L1 ------------------------------------------------------------------------------------------
    @staticmethod
    def _l1_key(ns: Namespace, query: str) -> str:
        return f"{ns.tenant}\x1f{ns.exact_key(query)}"

    async def get_exact(self, ns: Namespace, query: str) -> CacheHit | None:
        """L1. With Redis, first catches up with purges made through other replicas (at most every
        ``sync_interval_s``; a Redis failure raises :class:`RedisUnavailable` after the lookup)."""
        error: RedisUnavailable | None = None
        if self.redis is not None:
            try:
                await self._sync(ns.tenant, force=False)
            except RedisUnavailable as exc:
                error = exc
        answer = self.l1.get(self._l1_key(ns, query))
        if answer is not None:
            return CacheHit(answer, "l1")
        if error is not None:
            raise error
        return None

    # -- L2 ------------------------------------------------------------------------------------------
    async def get_similar(self, ns: Namespace, query: str, vector: np.ndarray, idf: IdfFn) -> CacheHit | None:
        """L2: the most similar cached query that passes the guard. Raises :class:`RedisUnavailable`
        when the shared cache cannot be read (the caller answers without it)."""
        tenant = await self._sync(ns.tenant, force=True) if self.redis is not None else self._local(ns.tenant)
        space = tenant.spaces.get(ns.digest)
        if space is None:
            return None
        space.prune(self._wall())
        for neighbour in space.nearest(vector, threshold=self.threshold):
            cached = neighbour.query
            if not check(cached.text, query, self.analyzer, idf, rare_idf=self.rare_idf).compatible:
                continue
            answer = await self._answer(ns.tenant, tenant, cached.entry_id)
            if answer is None:  # expired or purged meanwhile
                space.remove(cached.entry_id)
                continue
            self.l1.put(self._l1_key(ns, query), answer)
            return CacheHit(answer, "l2", neighbour.similarity)
        return None

    async def put(self, ns: Namespace, query: str, vector: np.ndarray | None, answer: dict[str, Any]) -> None:
        """Cache ``answer`` (L1; L2 when ``vector`` is given). Raises :class:`RedisUnavailable` when the
        shared copy could not be written (L1 and this process's L2 still have it)."""
        self.l1.put(self._l1_key(ns, query), answer)
        if vector is None:
            return
        tenant = self._local(ns.tenant)
        entry_id = uuid.uuid4().hex
        expires = self._wall() + self.ttl_s
        self._space(tenant, ns.digest).add(CachedQuery(entry_id, query, expires), vector)
        tenant.known.add(entry_id)
        if self.redis is None:
            tenant.answers[entry_id] = (expires, answer)
            self._trim(tenant)
            return
        _, log_prefix, entry_prefix = _tenant_keys(ns.tenant)
        log_key = log_prefix + tenant.generation
        fields = {
            "id": entry_id,
            "ns": ns.digest,
            "text": query,
            "exp": repr(expires),
            "vec": np.asarray(vector, dtype=np.float32).tobytes(),
        }
        ttl = max(int(self.ttl_s), 1)
        payload = json.dumps(answer, separators=(",", ":"))

        async def write(r: Any) -> Any:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(entry_prefix + entry_id, payload, ex=ttl)
                pipe.xadd(log_key, fields, maxlen=self.l2_entries, approximate=True)
                pipe.expire(log_key, ttl)
                return await pipe.execute()

        await self.redis.run(write)

    async def purge(self, tenant: str) -> None:
        """Forget every cached answer of ``tenant``, here and (with Redis) on every replica."""
        self._tenants.pop(tenant, None)
        self.l1.drop_where(lambda k: k.startswith(f"{tenant}\x1f"))
        if self.redis is not None:
            gen_key, _, _ = _tenant_keys(tenant)
            await self.redis.run(lambda r: r.incr(gen_key))

    # -- internals -----------------------------------------------------------------------------------
    def _local(self, tenant: str) -> _Tenant:
        state = self._tenants.get(tenant)
        if state is None:
            state = self._tenants[tenant] = _Tenant()
        return state

    def _space(self, tenant: _Tenant, digest: str) -> QueryVectors:
        space = tenant.spaces.get(digest)
        if space is None:
            space = tenant.spaces[digest] = QueryVectors(self.dim, self.l2_entries)
        return space

    def _trim(self, tenant: _Tenant) -> None:
        now = self._wall()
        for entry_id in [e for e, (exp, _) in tenant.answers.items() if exp <= now]:
            del tenant.answers[entry_id]
            tenant.known.discard(entry_id)

    async def _answer(self, name: str, tenant: _Tenant, entry_id: str) -> dict[str, Any] | None:
        if self.redis is None:
            item = tenant.answers.get(entry_id)
            return item[1] if item is not None and item[0] > self._wall() else None
        _, _, entry_prefix = _tenant_keys(name)
        raw = await self.redis.run(lambda r: r.get(entry_prefix + entry_id))
        return json.loads(raw) if raw else None

    async def _sync(self, name: str, *, force: bool) -> _Tenant:
        """Catch up with the tenant's shared stream (and its generation)."""
        assert self.redis is not None
        tenant = self._local(name)
        now = time.monotonic()
        if not force and now - tenant.synced_at < self.sync_interval_s:
            return tenant
        gen_key, log_prefix, _ = _tenant_keys(name)
        script = self._sync_script
        assert script is not None
        args: list[str | int] = [log_prefix, _after(tenant.last_id), tenant.generation, 1000]
        generation, entries = await self.redis.run(lambda r: script(keys=[gen_key], args=args))
        generation = generation.decode() if isinstance(generation, bytes) else str(generation)
        if generation != tenant.generation:  # purged through some replica: start over
            self.l1.drop_where(lambda k: k.startswith(f"{name}\x1f"))
            tenant = self._tenants[name] = _Tenant(generation=generation)
        for stream_id, raw in entries:
            tenant.last_id = stream_id.decode() if isinstance(stream_id, bytes) else stream_id
            flat = list(raw)  # a Lua reply: [k1, v1, k2, v2, …]
            fields = {_text(k): v for k, v in zip(flat[::2], flat[1::2], strict=True)}
            entry_id = fields["id"].decode()
            if entry_id in tenant.known:
                continue
            tenant.known.add(entry_id)
            vector = np.frombuffer(fields["vec"], dtype=np.float32)
            if vector.shape != (self.dim,):
                continue  # written by a replica with another model: not comparable
            cached = CachedQuery(entry_id, fields["text"].decode(), float(fields["exp"].decode()))
            self._space(tenant, fields["ns"].decode()).add(cached, vector)
        tenant.synced_at = now
        return tenant


def _after(stream_id: str) -> str:
    """The exclusive start of an XRANGE after ``stream_id`` (``-`` = from the beginning)."""
    return "-" if stream_id == "-" else f"({stream_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
