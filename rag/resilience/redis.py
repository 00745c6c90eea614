"""Redis, owned in one place: the client, the one failure policy and every key the service writes.

Redis is never the source of truth: every caller has an answer for :class:`RedisUnavailable` (the cache
answers without its shared part, the rate limit runs in process, breakers, spend and the bandit stay
local, the rollout config keeps serving). Nothing outside this module holds a raw ``redis.asyncio``
client: callers get one only inside :meth:`GuardedRedis.run` (or run a Lua script through
:meth:`GuardedRedis.script`), and name keys only through :class:`RedisKeys`.

**The failure policy** (one, for every caller): a blocking pool (redis-py 8's default pool raises past its
size instead of waiting), a timeout per call (``RAG_REDIS_TIMEOUT_MS``; connect, command and pool wait)
and no retries, behind the ``redis`` breaker; every failure, timeout or refusal surfaces as
:class:`RedisUnavailable`. Within :func:`one_attempt` (a request) Redis is tried once: after a failure,
the request's later calls raise at once instead of each waiting out its own timeout. The breaker does the
same across requests, but only once enough calls have failed; until then a request would pay one timeout
per call (rate limit, cache sync, L2 lookup, L2 write).

**Who shares what.** A *deployment* is the replicas serving one collection (``RAG_COLLECTION``) on one
Redis (``RAG_REDIS_URL``, database included). Every key starts with ``rag:<collection>:``: the replicas
of a deployment share all of them, two deployments on one Redis share none. Each piece of state is
decided per deployment, so none should be shared: the rate limit and its settings protect one
deployment's replicas; spend is counted against the budgets of that deployment's rollout config; the
rollout config itself is applied through one deployment's admin route; a breaker reflects the
dependencies one deployment is configured with (its embedder, reranker, vector collection); the bandit
learned on one corpus; cached answers come from one index (their namespace also names the index, see
:class:`rag.cache.keys.IndexIdentity`, so two data dirs with one collection name do not share answers).

========================================  =============================  ==================================
key (``<c>`` = collection)                what                           lifetime
========================================  =============================  ==================================
``rag:<c>:cache:{<tenant>}:gen``          a tenant's cache generation    none (bumped by a purge)
``rag:<c>:cache:{<tenant>}:log:<gen>``    stream of cached queries       cache TTL, capped length
``rag:<c>:cache:{<tenant>}:e:<entry>``    a signed cached answer         cache TTL
``rag:<c>:ratelimit:<tenant>[:<name>]``   token bucket (tokens, ts)      until the bucket is full again
``rag:<c>:breaker:<dependency>``          who opened it, when, why       the open period
``rag:<c>:spend:<scope>:<minute>``        spend of that minute           2 hours
``rag:<c>:rollout:config``                the rollout config text        none (deleted by an admin)
``rag:<c>:bandit``                        the bandit's state (JSON)      none (replicas add their updates)
``rag:<c>:decisions:{<tenant>}:index``    a tenant's pending decisions   decision TTL (refreshed per write)
                                          (sorted set: id → ms written)
``rag:<c>:decisions:{<tenant>}:d:<id>``   a decision awaiting feedback   decision TTL, or taken, or trimmed
``rag:<c>:index:published`` (channel)     a published version's name     pub/sub: not stored
========================================  =============================  ==================================

``{<tenant>}`` is a cluster hash tag: one tenant's cache keys live on one slot (its sync script reads
the generation and the stream in one call), and so do its pending decisions (the record script trims
the index and deletes the trimmed decisions in one call).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from rag.errors import RagError
from rag.resilience.breaker import Breaker

T = TypeVar("T")
ROOT = "rag"
_COLLECTION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # RAG_COLLECTION's pattern: no ':', '{' or '}'

Client = Redis  # what a function given to GuardedRedis.run receives (the only raw client callers see)
Script = Callable[[Sequence[str], Sequence[str | int | float]], Awaitable[Any]]


class RedisUnavailable(RagError, RuntimeError):
    """Redis failed, timed out, or its breaker is open; the message says which."""


# -- keys ------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CacheKeys:
    """One tenant's query-cache keys (see the table in the module docstring)."""

    generation: str
    log_prefix: str  # + generation: the stream of the current generation
    answer_prefix: str  # + entry id: a signed answer

    def log(self, generation: str) -> str:
        return self.log_prefix + generation

    def answer(self, entry_id: str) -> str:
        return self.answer_prefix + entry_id


@dataclass(frozen=True, slots=True)
class DecisionKeys:
    """One tenant's routing decisions awaiting feedback (see the table in the module docstring)."""

    index: str  # sorted set: request id → when it was written (ms, Redis clock)
    entry_prefix: str  # + request id: the decision (JSON)

    def entry(self, request_id: str) -> str:
        return self.entry_prefix + request_id


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Every key of one deployment (a collection on one Redis); the only place a key name is written."""

    collection: str

    def __post_init__(self) -> None:
        if not _COLLECTION.match(self.collection):
            raise ValueError(
                f"collection must match {_COLLECTION.pattern} (it is part of every Redis key), "
                f"got {self.collection!r}"[:300]
            )

    @property
    def root(self) -> str:
        return f"{ROOT}:{self.collection}:"

    def cache(self, tenant: str) -> CacheKeys:
        tag = f"{self.root}cache:{{{tenant}}}"  # a hash tag: one tenant's keys live on one cluster slot
        return CacheKeys(f"{tag}:gen", f"{tag}:log:", f"{tag}:e:")

    def rate_limit(self, bucket: str) -> str:
        """A token bucket: a tenant's (``acme``) or a named one of a tenant's (``acme:feedback``)."""
        return f"{self.root}ratelimit:{bucket}"

    def breaker(self, dependency: str) -> str:
        return f"{self.root}breaker:{dependency}"

    def spend(self, scope: str, minute: int) -> str:
        """A budget scope's (a tenant's, or the global one's) spend in one minute since the epoch."""
        return f"{self.root}spend:{scope}:{minute}"

    @property
    def rollout_config(self) -> str:
        return f"{self.root}rollout:config"

    @property
    def bandit(self) -> str:
        return f"{self.root}bandit"

    def decisions(self, tenant: str) -> DecisionKeys:
        tag = f"{self.root}decisions:{{{tenant}}}"  # a hash tag: one tenant's decisions on one slot
        return DecisionKeys(f"{tag}:index", f"{tag}:d:")

    @property
    def index_published(self) -> str:
        """The pub/sub channel a publish is announced on (rag.service.version_follower)."""
        return f"{self.root}index:published"


# -- the failure policy ----------------------------------------------------------------------------------
@dataclass(slots=True)
class _Attempt:
    failure: str = ""  # why Redis failed in this scope ("" while it has not)


# mutable and shared: a task started within the scope (a single-flight computation) sees the same attempt
_attempt: ContextVar[_Attempt | None] = ContextVar("rag_redis_attempt", default=None)


@contextmanager
def one_attempt() -> Iterator[None]:
    """Within this block (one request), once a Redis call fails the later ones are not tried."""
    token = _attempt.set(_Attempt())
    try:
        yield
    finally:
        _attempt.reset(token)


def connect(url: str, *, timeout_s: float, max_connections: int = 64) -> Redis:
    """A client with explicit bounds: a blocking pool, ``timeout_s`` for connect, command and a free
    connection, no retries — a dead or hung Redis costs a call ``timeout_s``, not seconds."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # waiting for a free connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)


class GuardedRedis:
    """The one door to Redis: every call goes through :meth:`run` (the breaker, the timeout, one attempt
    per request) and every key comes from :attr:`keys`."""

    def __init__(self, client: Redis, breaker: Breaker, *, timeout_s: float, keys: RedisKeys) -> None:
        self._client = client
        self.breaker = breaker
        self.timeout_s = timeout_s
        self.keys = keys

    @classmethod
    def connect(cls, url: str, breaker: Breaker, *, timeout_s: float, collection: str) -> GuardedRedis:
        return cls(
            connect(url, timeout_s=timeout_s), breaker, timeout_s=timeout_s, keys=RedisKeys(collection)
        )

    async def run(self, fn: Callable[[Redis], Awaitable[T]]) -> T:
        """``fn(client)`` under the policy; :class:`RedisUnavailable` when it fails, times out or is not
        tried (breaker open, or Redis already failed in this request)."""
        attempt = _attempt.get()
        if attempt is not None and attempt.failure:
            raise RedisUnavailable(f"not tried again in this request: {attempt.failure}"[:200])
        try:
            return await self.breaker.call(lambda: fn(self._client), timeout_s=self.timeout_s)
        except Exception as exc:
            why = f"redis unavailable: {type(exc).__name__}: {exc}"[:200]
            if attempt is not None:
                attempt.failure = why
            raise RedisUnavailable(why) from exc

    def script(self, lua: str) -> Script:
        """A Lua script (loaded by its SHA on first use), each call run through :meth:`run`."""
        registered = self._client.register_script(lua)

        async def call(keys: Sequence[str], args: Sequence[str | int | float]) -> Any:
            return await self.run(lambda r: registered(keys=list(keys), args=list(args), client=r))

        return call

    async def listen(self, channel: str, *, wait_s: float = 1.0) -> AsyncIterator[str]:
        """The messages published on ``channel`` from now on, as they come, until the caller stops.
        A subscription is one long-lived connection, so it is not a breaker call: its failure ends the
        iteration with :class:`RedisUnavailable` (the caller subscribes again later). ``wait_s``: how long
        one read blocks (a dead connection is noticed within it)."""
        pubsub = self._client.pubsub(ignore_subscribe_messages=True)
        try:
            await asyncio.wait_for(pubsub.subscribe(channel), self.timeout_s)
            while True:
                message = await pubsub.get_message(timeout=wait_s)
                if message is not None and message.get("type") == "message":
                    data = message["data"]
                    yield data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        except (RedisError, OSError, TimeoutError) as exc:
            raise RedisUnavailable(
                f"subscription to {channel} lost: {type(exc).__name__}: {exc}"[:200]
            ) from exc
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def close(self) -> None:
        await self._client.aclose()
