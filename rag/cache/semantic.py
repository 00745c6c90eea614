"""The query cache: L1 exact (in process) and L2 semantic (shared through Redis when configured).

L2 finds a cached query of the same namespace (tenant, index, model, parameters) whose embedding
is within ``threshold`` cosine similarity of the new query's, and which the lexical guard
(:mod:`rag.cache.guard`) accepts; the guard's CPU grows with query length, so it runs in a worker thread
(one hand-off per lookup, for every candidate at once). Each process keeps the vectors of the cached
queries it knows of (:class:`~rag.cache.entries.L2Entries`, bounded by count and bytes per namespace,
per tenant and overall). With Redis *and* a cache secret, the answers live there with a TTL and every new
entry is appended to a per-tenant stream (keys: :meth:`rag.resilience.redis.RedisKeys.cache`, per
deployment) that the other replicas read on their next lookup, so an answer
cached through one replica is found through another; both are signed and checked
(:mod:`rag.cache.shared`): what fails the check is a miss, and a bad answer is deleted. With Redis but no
secret, answers stay in process (nothing unsigned is shared) and only purges go through Redis.

Purging a tenant bumps its *generation* (in Redis when configured): every replica that syncs sees the new
generation and drops what it held for the tenant; the old entries expire by their TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.cache.entries import L2Entries, L2Limits, TenantEntries
from rag.cache.guard import IdfFn, check
from rag.cache.keys import IndexIdentity, Namespace
from rag.cache.l1 import LruTtl
from rag.cache.shared import EntrySigner, StreamEntry, dumps, open_answer, seal_answer
from rag.cache.vectors import CachedQuery, Neighbour
from rag.resilience.redis import GuardedRedis, RedisUnavailable
from rag.text.analyzer import Analyzer
from rag.types import CacheLevel

MIB = 1024 * 1024
log = logging.getLogger(__name__)

# One round trip per sync: the tenant's generation and (unless ARGV[4] is 0) the stream entries after the
# last one seen.
_SYNC = """
local gen = redis.call('GET', KEYS[1]) or '0'
if tonumber(ARGV[4]) == 0 then return {gen, {}} end
local log = ARGV[1] .. gen
local start = ARGV[2]
if ARGV[3] ~= gen then start = '-' end
return {gen, redis.call('XRANGE', log, start, '+', 'COUNT', ARGV[4])}
"""


@dataclass(frozen=True, slots=True)
class CacheHit:
    answer: dict[str, Any]
    level: CacheLevel  # L1 (exact) or L2 (semantic)
    similarity: float = 1.0


@dataclass(frozen=True, slots=True)
class CacheStats:
    """What the cache holds in this process (L1 figures are process-wide, L2 figures per tenant when
    asked for one)."""

    l1_entries: int
    l1_bytes: int
    l2_entries: int
    l2_bytes: int
    spaces: int
    tenants: int


class QueryCache:
    def __init__(
        self,
        *,
        dim: int,
        analyzer: Analyzer,
        threshold: float,
        ttl_s: float,
        degraded_ttl_s: float = 5.0,
        l1_entries: int = 10_000,
        l1_max_bytes: int = 64 * MIB,
        l2_entries: int = 10_000,
        l2_max_entries: int = 100_000,
        l2_max_bytes: int = 64 * MIB,
        tenant_share: float = 0.5,
        max_spaces: int = 64,
        max_tenants: int = 1000,
        rare_idf: float = 4.0,
        redis: GuardedRedis | None = None,
        secret: bytes | None = None,
        sync_interval_s: float = 1.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"cache threshold must be in (0, 1], got {threshold}")
        self.dim = dim
        self.analyzer = analyzer
        self.threshold = threshold
        self.ttl_s = ttl_s
        self.degraded_ttl_s = degraded_ttl_s
        self.l2_entries = l2_entries
        self.rare_idf = rare_idf
        self.redis = redis
        self.sync_interval_s = sync_interval_s
        self._wall = wall
        self.l1: LruTtl[dict[str, Any]] = LruTtl(l1_entries, ttl_s, max_bytes=l1_max_bytes)
        limits = L2Limits(l2_entries, l2_max_entries, l2_max_bytes, tenant_share, max_spaces, max_tenants)
        self.l2 = L2Entries(dim, limits)
        self._signer = EntrySigner(secret) if redis is not None and secret else None
        if redis is not None and self._signer is None:
            log.warning(
                "RAG_REDIS_URL is set but RAG_CACHE_SECRET is not: cached answers are not shared between "
                "replicas (unsigned entries could be forged by anyone who can write to Redis); each "
                "replica keeps its own L2, purges still reach every replica"
            )
        self._sync_script = redis.script(_SYNC) if redis is not None else None
        self._guard_lock = threading.Lock()  # the analyzer's stemmer is not thread-safe

    @property
    def shared(self) -> bool:
        """Whether L2 answers are shared through Redis (Redis and a cache secret are configured)."""
        return self._signer is not None

    def serve_index(self, index: IndexIdentity) -> None:
        """The index now served: the cache drops what it holds of any other, and keeps nothing of another
        from now on. Safe to call from any thread (the service switches versions in one)."""
        self.l2.serve_version(index.key)

    def stats(self, tenant: str | None = None) -> CacheStats:
        l2 = self.l2.stats(tenant)
        return CacheStats(len(self.l1), self.l1.bytes, l2.entries, l2.bytes, l2.spaces, l2.tenants)

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
            return CacheHit(answer, CacheLevel.L1)
        if error is not None:
            raise error
        return None

    # -- L2 ------------------------------------------------------------------------------------------
    async def get_similar(self, ns: Namespace, query: str, vector: np.ndarray, idf: IdfFn) -> CacheHit | None:
        """L2: the most similar cached query that passes the guard. Raises :class:`RedisUnavailable`
        when the shared cache cannot be read (the caller answers without it)."""
        if self.redis is not None:
            await self._sync(ns.tenant, force=self.shared)
        now = self._wall()
        self.l2.prune(now)
        candidates = self.l2.nearest(ns.tenant, ns.digest, vector, threshold=self.threshold, now=now)
        if not candidates:
            return None
        for neighbour in await asyncio.to_thread(self._compatible, candidates, query, idf):
            entry_id = neighbour.query.entry_id
            found = await self._answer(ns, entry_id)
            if found is None:  # expired, purged or invalid meanwhile
                self.l2.remove(entry_id)
                continue
            answer, size = found
            self.l1.put(self._l1_key(ns, query), answer, size=size)
            return CacheHit(answer, CacheLevel.L2, neighbour.similarity)
        return None

    def _compatible(self, candidates: list[Neighbour], query: str, idf: IdfFn) -> list[Neighbour]:
        """The candidates the guard lets answer ``query`` (in a worker thread: CPU scales with length)."""
        with self._guard_lock:
            return [
                n
                for n in candidates
                if check(n.query.text, query, self.analyzer, idf, rare_idf=self.rare_idf).compatible
            ]

    async def put(self, ns: Namespace, query: str, vector: np.ndarray | None, answer: dict[str, Any]) -> None:
        """Cache ``answer`` (L1; L2 when ``vector`` is given). Raises :class:`RedisUnavailable` when the
        shared copy could not be written (L1 and this process's L2 still have it)."""
        payload = dumps(answer)
        self.l1.put(self._l1_key(ns, query), answer, size=len(payload))
        if vector is None or not self.l2.serves(ns.index.key):
            return
        now = self._wall()
        self.l2.prune(now)
        entry = StreamEntry(
            uuid.uuid4().hex,
            ns.digest,
            ns.index.key,
            query,
            now + self.ttl_s,
            np.asarray(vector, np.float32),
        )
        cached = CachedQuery(entry.entry_id, query, entry.expires_at)
        signer = self._signer
        if self.redis is None or signer is None:
            self.l2.add(ns.tenant, ns.digest, ns.index.key, cached, entry.vector, payload)
            return
        self.l2.add(ns.tenant, ns.digest, ns.index.key, cached, entry.vector)
        generation = self.l2.tenant(ns.tenant).generation
        keys = self.redis.keys.cache(ns.tenant)
        answer_key, log_key = keys.answer(entry.entry_id), keys.log(generation)
        fields = entry.to_fields(signer, ns.tenant)
        value = seal_answer(signer, ns.digest, entry.entry_id, payload)
        ttl = max(int(self.ttl_s), 1)

        async def write(r: Any) -> Any:
            async with r.pipeline(transaction=False) as pipe:
                pipe.set(answer_key, value, ex=ttl)
                pipe.xadd(log_key, fields, maxlen=self.l2_entries, approximate=True)
                pipe.expire(log_key, ttl)
                return await pipe.execute()

        await self.redis.run(write)

    def put_degraded(self, ns: Namespace, query: str, answer: dict[str, Any]) -> bool:
        """Hold a degraded ``answer`` (it says what it gave up, under ``"degraded"``) in L1 for
        ``degraded_ttl_s``: under load, the repeats of a hot query stay cache hits instead of each
        recomputing a degraded answer. Never shared through Redis nor put in L2, never in place of a full
        answer held already; the full answer, once computed, replaces it (:meth:`put`). Returns whether
        it was held."""
        key = self._l1_key(ns, query)
        held = self.l1.get(key)
        if self.degraded_ttl_s <= 0 or (held is not None and not held.get("degraded")):
            return False
        self.l1.put(key, answer, size=len(dumps(answer)), ttl_s=self.degraded_ttl_s)
        return True

    async def purge(self, tenant: str) -> None:
        """Forget every cached answer of ``tenant``, here and (with Redis) on every replica."""
        self.l2.forget(tenant)
        self.l1.drop_where(lambda k: k.startswith(f"{tenant}\x1f"))
        if self.redis is not None:
            gen_key = self.redis.keys.cache(tenant).generation
            await self.redis.run(lambda r: r.incr(gen_key))

    # -- internals -----------------------------------------------------------------------------------
    async def _answer(self, ns: Namespace, entry_id: str) -> tuple[dict[str, Any], int] | None:
        """The answer of an entry and its size in bytes; None when gone or (from Redis) invalid."""
        if self.redis is None or self._signer is None:
            payload = self.l2.payload(entry_id)
            return (json.loads(payload), len(payload)) if payload is not None else None
        signer = self._signer
        key = self.redis.keys.cache(ns.tenant).answer(entry_id)
        raw = await self.redis.run(lambda r: r.get(key))
        if not isinstance(raw, bytes) or not raw:  # the client returns bytes (decode_responses=False)
            return None
        answer = open_answer(signer, ns, entry_id, raw)
        if answer is None:
            log.warning("cache: deleted an answer in Redis that failed its signature or schema: %s", key)
            with contextlib.suppress(RedisUnavailable):  # else it stays a miss; the next reader deletes it
                await self.redis.run(lambda r: r.delete(key))
            return None
        return answer, len(raw)

    async def _sync(self, name: str, *, force: bool) -> TenantEntries:
        """Catch up with the tenant's generation and (when shared) its stream."""
        assert self.redis is not None and self._sync_script is not None
        tenant = self.l2.tenant(name)
        now = time.monotonic()
        if not force and now - tenant.synced_at < self.sync_interval_s:
            return tenant
        keys = self.redis.keys.cache(name)
        count = 1000 if self.shared else 0
        args: list[str | int] = [keys.log_prefix, _after(tenant.last_id), tenant.generation, count]
        generation, entries = await self._sync_script([keys.generation], args)
        generation = _text(generation)
        if generation != tenant.generation:  # purged through some replica: start over
            self.l1.drop_where(lambda k: k.startswith(f"{name}\x1f"))
            tenant = self.l2.reset(name, generation)
        rejected = 0
        wall = self._wall()
        for stream_id, raw in entries:
            tenant.last_id = _text(stream_id)
            flat = list(raw)  # a Lua reply: [k1, v1, k2, v2, …]
            fields = {_text(k): v for k, v in zip(flat[::2], flat[1::2], strict=False)}
            assert self._signer is not None  # entries are read only when shared
            entry = StreamEntry.from_fields(self._signer, name, fields, self.dim)
            if entry is None:
                rejected += 1
                continue
            if self.l2.holds(entry.entry_id) or entry.expires_at <= wall:
                continue
            cached = CachedQuery(entry.entry_id, entry.text, entry.expires_at)
            self.l2.add(name, entry.digest, entry.version, cached, entry.vector)
        if rejected:
            log.warning(
                "cache: skipped %d stream entries of tenant %r that failed their signature", rejected, name
            )
        tenant.synced_at = now
        return tenant


def _after(stream_id: str) -> str:
    """The exclusive start of an XRANGE after ``stream_id`` (``-`` = from the beginning)."""
    return "-" if stream_id == "-" else f"({stream_id}"


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
