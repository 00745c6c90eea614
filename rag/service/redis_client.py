"""The async Redis client the service uses, with explicit bounds: a blocking pool (redis-py 8's default
pool raises past its size instead of waiting), short timeouts and no retries, so that a dead or hung Redis
costs a request milliseconds, not seconds."""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def connect_redis(url: str, *, timeout_s: float = 0.05, max_connections: int = 64) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_s,  # waiting for a free connection
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis(connection_pool=pool)
