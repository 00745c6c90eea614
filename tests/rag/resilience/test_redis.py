"""The one door to Redis (rag.resilience.redis): tried once per request — after a failure within
:func:`one_attempt`, the request's later Redis calls raise at once instead of each waiting out its own
timeout — and every key of a deployment under its collection, so two deployments on one Redis share none."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis, RedisKeys, RedisUnavailable, one_attempt
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

DEAD = "redis://127.0.0.1:1/0"  # nothing listens: every call fails
ROOT = Path(__file__).resolve().parents[3]
OWNER = ROOT / "rag" / "resilience" / "redis.py"


def redis_at(url: str) -> GuardedRedis:
    # a breaker that never opens here: what is counted is this module's own once-per-request rule
    policy = BreakerPolicy(min_calls=1000, window_calls=1000)
    return GuardedRedis.connect(url, Breaker("redis", policy), timeout_s=0.2, collection="svc")


async def three_calls(redis: GuardedRedis) -> tuple[int, list[str]]:
    """How many of three calls reached the client, and what each raised."""
    tried = 0
    errors: list[str] = []

    async def ping(client: Any) -> Any:
        nonlocal tried
        tried += 1
        return await client.ping()

    for _ in range(3):
        try:
            await redis.run(ping)
        except RedisUnavailable as exc:
            errors.append(str(exc))
    return tried, errors


async def test_within_one_request_a_failed_redis_is_not_tried_again() -> None:
    redis = redis_at(DEAD)
    with one_attempt():
        tried, errors = await three_calls(redis)
    assert tried == 1 and len(errors) == 3
    assert "ConnectionError" in errors[0]
    assert all(e.startswith("not tried again in this request") for e in errors[1:])
    # outside a request (background loops) and in the next request, each call tries Redis
    assert (await three_calls(redis))[0] == 3
    with one_attempt():
        assert (await three_calls(redis))[0] == 1
    await redis.close()


async def test_a_request_that_reaches_redis_keeps_using_it(redis_process: RedisServer) -> None:
    redis = redis_at(redis_process.url)
    with one_attempt():
        tried, errors = await three_calls(redis)
    assert (tried, errors) == (3, [])
    await redis.close()


async def test_a_script_runs_under_the_same_policy(redis_process: RedisServer) -> None:
    """A Lua script is one more call through the door: it runs, and within a request where Redis has
    failed it is not tried."""
    redis, dead = redis_at(redis_process.url), redis_at(DEAD)
    echo, dead_echo = redis.script("return ARGV[1]"), dead.script("return ARGV[1]")
    try:
        assert await echo([], ["hello"]) == b"hello"
        with one_attempt():
            with pytest.raises(RedisUnavailable, match="ConnectionError"):
                await dead_echo([], ["hello"])
            with pytest.raises(RedisUnavailable, match="not tried again"):
                await dead_echo([], ["hello"])
    finally:
        await redis.close()
        await dead.close()


def every_key(keys: RedisKeys) -> list[str]:
    cache = keys.cache("acme")
    return [
        cache.generation,
        cache.log("0"),
        cache.answer("e1"),
        keys.rate_limit("acme"),
        keys.breaker("llm"),
        keys.spend("acme", 28_000_000),
        keys.rollout_config,
        keys.bandit,
        keys.decisions("acme").index,
        keys.decisions("acme").entry("req-1"),
    ]


def test_every_key_of_a_deployment_lives_under_its_collection() -> None:
    one, other = every_key(RedisKeys("svc")), every_key(RedisKeys("other"))
    assert all(k.startswith("rag:svc:") for k in one) and all(k.startswith("rag:other:") for k in other)
    assert len(set(one)) == len(one)  # no two kinds of state share a key
    assert not set(one) & set(other)  # two deployments on one Redis share nothing


def test_a_tenants_cache_keys_share_one_cluster_slot() -> None:
    """The cache's sync script reads a tenant's generation and stream in one call: one hash tag."""
    cache = RedisKeys("svc").cache("acme")
    assert all("{acme}" in k for k in (cache.generation, cache.log("3"), cache.answer("e1")))
    assert cache.log("3") == cache.log_prefix + "3" and cache.answer("e1") == cache.answer_prefix + "e1"


def test_a_tenants_pending_decisions_share_one_cluster_slot_and_name_the_tenant() -> None:
    """The record script trims a tenant's index and deletes the trimmed decisions in one call."""
    acme, globex = RedisKeys("svc").decisions("acme"), RedisKeys("svc").decisions("globex")
    assert all("{acme}" in k for k in (acme.index, acme.entry("r1"), acme.entry_prefix))
    assert acme.entry("r1") == acme.entry_prefix + "r1" and acme.entry("r1") != globex.entry("r1")


@pytest.mark.parametrize("collection", ["", "a:b", "a{b}", "x" * 65, "café"])
def test_a_collection_that_could_break_the_key_layout_is_refused(collection: str) -> None:
    with pytest.raises(ValueError, match="collection must match"):
        RedisKeys(collection)


def test_only_the_owner_imports_the_redis_client() -> None:
    """Every other module reaches Redis through :class:`GuardedRedis` (its policy, its keys)."""
    importers = []
    for path in sorted((*ROOT.joinpath("rag").rglob("*.py"), *ROOT.joinpath("api").rglob("*.py"))):
        if path == OWNER:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            if any(n == "redis" or n.startswith("redis.") for n in names):
                importers.append(str(path.relative_to(ROOT)))
    assert importers == []
