"""Hot reload: a file change is applied and listeners told; an invalid text is rejected while the old
config keeps serving; Redis (a real redis-server) wins over the file while it holds a value, and a Redis
outage neither changes the config nor stops the polling loop."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from redis.asyncio import Redis

from rag.resilience.redis import RedisKeys
from rag.rollout.config import ConfigError, FallbackSection, RolloutConfig
from rag.rollout.policy import RoutingPolicy
from rag.rollout.watcher import ConfigWatcher
from rag.testing.background import background_errors, until
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

RATE_10 = "[shadow]\nrate = 0.1\n"
RATE_20 = "[shadow]\nrate = 0.2\n"
RATE_30_JSON = '{"shadow": {"rate": 0.3}}'
INVALID = "[shadow]\nrate = 7\n"
REDIS_KEY = RedisKeys("svc").rollout_config
DEADLINE_S = 0.5  # the request deadline the fallback thresholds are relative to


def write(path: Path, text: str) -> None:
    """Write and move the modification time forward, so a quick rewrite of the same size is seen."""
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 1_000_000_000, before + 1_000_000_000))


def watch_file(tmp_path: Path, text: str = RATE_10) -> tuple[ConfigWatcher, Path, list[RoutingPolicy]]:
    path = tmp_path / "rollout.toml"
    write(path, text)
    watcher = ConfigWatcher(RolloutConfig.parse_text(text, "toml"), deadline_s=DEADLINE_S, path=path)
    seen: list[RoutingPolicy] = []
    watcher.listeners.append(seen.append)
    return watcher, path, seen


async def test_a_file_change_is_applied_and_listeners_are_told(tmp_path: Path) -> None:
    watcher, path, seen = watch_file(tmp_path)
    first = watcher.version
    assert await watcher.check_now() is False  # the same content as the initial config
    write(path, "# only a comment changed\n" + RATE_10)
    assert await watcher.check_now() is False and seen == []
    write(path, RATE_20)
    assert await watcher.check_now() is True
    assert watcher.current.shadow.rate == 0.2 and watcher.version != first
    assert watcher.source == f"file:{path}"
    assert [p.config.shadow.rate for p in seen] == [0.2]
    assert await watcher.check_now() is False and len(seen) == 1  # nothing new


async def test_an_invalid_file_is_rejected_and_a_fixed_one_applied(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, path, seen = watch_file(tmp_path)
    serving = watcher.version
    write(path, INVALID)
    assert await watcher.check_now() is False
    assert watcher.version == serving and watcher.current.shadow.rate == 0.1
    assert watcher.last_error is not None
    assert f"file:{path}" in watcher.last_error and "shadow.rate" in watcher.last_error
    assert "keeps serving" in caplog.text and "shadow.rate" in caplog.text
    assert await watcher.check_now() is False and watcher.last_error is not None  # still broken
    write(path, RATE_20)
    assert await watcher.check_now() is True
    assert watcher.current.shadow.rate == 0.2 and watcher.last_error is None
    assert [p.config.shadow.rate for p in seen] == [0.2]


async def test_a_json_file_and_a_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "rollout.json"
    watcher = ConfigWatcher(RolloutConfig(), deadline_s=DEADLINE_S, path=path)
    assert await watcher.check_now() is False
    assert watcher.last_error is not None and "No such file" in watcher.last_error
    write(path, RATE_30_JSON)
    assert await watcher.check_now() is True and watcher.current.shadow.rate == 0.3
    assert watcher.last_error is None


async def test_a_failing_listener_is_logged_and_the_others_still_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    watcher, path, seen = watch_file(tmp_path)

    def broken(policy: RoutingPolicy) -> None:
        raise RuntimeError("listener bug")

    watcher.listeners.insert(0, broken)
    write(path, RATE_20)
    assert await watcher.check_now() is True
    assert len(seen) == 1 and "listener bug" in caplog.text


async def test_a_config_that_cannot_be_built_serves_in_no_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All or nothing: the policy is built before the swap; a part that fails leaves the old policy
    serving whole, and the source's error says why."""
    watcher, path, seen = watch_file(tmp_path)
    serving = watcher.policy

    def broken(self: object, *, timeout_s: float) -> None:
        raise ValueError("no fallback policy today")

    monkeypatch.setattr(FallbackSection, "policy", broken)
    write(path, RATE_20 + "[budgets]\nsoft_fraction = 0.5\n")
    errors = background_errors("rollout_config")
    assert await watcher.check_now() is False
    assert watcher.policy is serving and seen == []
    assert "no fallback policy today" in (watcher.last_error or "")
    assert background_errors("rollout_config") == errors + 1
    with pytest.raises(ConfigError, match="cannot be applied: ValueError: no fallback policy today"):
        watcher.apply_text(RATE_30_JSON, "json")
    assert watcher.policy is serving
    monkeypatch.undo()
    assert await watcher.check_now() is False  # the file did not change since: fixed by its next edit
    write(path, RATE_20)
    assert await watcher.check_now() is True
    assert watcher.policy.sampler.rate == 0.2 and watcher.policy.fallback.timeout_s == DEADLINE_S
    assert [p.config.shadow.rate for p in seen] == [0.2]


async def test_apply_text_for_an_admin_route() -> None:
    watcher = ConfigWatcher(RolloutConfig(), deadline_s=DEADLINE_S)
    version = watcher.apply_text(RATE_30_JSON, "json", source="admin:alice")
    assert version == watcher.version and watcher.source == "admin:alice"
    assert watcher.current.shadow.rate == 0.3
    with pytest.raises(ConfigError, match=r"shadow\.rate"):
        watcher.apply_text(INVALID, "toml")
    assert watcher.version == version
    assert watcher.status() == {"version": version, "source": "admin:alice", "errors": {}}


async def test_redis_wins_over_the_file_while_it_holds_a_value(tmp_path: Path, redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        path = tmp_path / "rollout.toml"
        write(path, RATE_10)
        watcher = ConfigWatcher(
            RolloutConfig.parse_text(RATE_10, "toml"),
            deadline_s=DEADLINE_S,
            path=path,
            redis_get=lambda: client.get(REDIS_KEY),
        )
        assert await watcher.check_now() is False  # no Redis value: the file, as started

        await client.set(REDIS_KEY, RATE_30_JSON)  # an admin, for every replica
        assert await watcher.check_now() is True
        assert watcher.current.shadow.rate == 0.3 and watcher.source == "redis"

        write(path, RATE_20)  # a replica's file changes meanwhile: Redis still wins
        assert await watcher.check_now() is False and watcher.current.shadow.rate == 0.3

        await client.set(REDIS_KEY, INVALID)
        assert await watcher.check_now() is False and watcher.current.shadow.rate == 0.3
        assert watcher.last_error is not None and watcher.last_error.startswith("redis: ")

        await client.delete(REDIS_KEY)  # hand control back to the file, at once
        assert await watcher.check_now() is True
        assert watcher.current.shadow.rate == 0.2 and watcher.source == f"file:{path}"
        assert watcher.last_error is None
    finally:
        await client.aclose()


async def test_deleting_the_redis_value_without_a_file_restores_the_initial_config(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    try:
        initial = RolloutConfig.parse_text(RATE_10, "toml")
        watcher = ConfigWatcher(initial, deadline_s=DEADLINE_S, redis_get=lambda: client.get(REDIS_KEY))
        await client.set(REDIS_KEY, RATE_20)
        assert await watcher.check_now() is True and watcher.current.shadow.rate == 0.2
        await client.delete(REDIS_KEY)
        assert await watcher.check_now() is True and watcher.current == initial
    finally:
        await client.aclose()


async def test_a_redis_outage_keeps_the_config_and_is_recorded(
    redis_process: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    client = Redis.from_url(redis_process.url, socket_connect_timeout=2, socket_timeout=2)
    try:
        watcher = ConfigWatcher(
            RolloutConfig(), deadline_s=DEADLINE_S, redis_get=lambda: client.get(REDIS_KEY)
        )
        await client.set(REDIS_KEY, RATE_20)
        assert await watcher.check_now() is True
        serving = watcher.version
        redis_process.kill()
        assert await watcher.check_now() is False
        assert watcher.version == serving
        assert watcher.last_error is not None and watcher.last_error.startswith("redis: ")
        assert "keeps serving" in caplog.text
        redis_process.restart()  # back, empty: no value any more, so back to the initial config
        assert await watcher.check_now() is True
        assert watcher.current == RolloutConfig() and watcher.last_error is None
    finally:
        await client.aclose()


async def test_the_background_loop_survives_redis_errors() -> None:
    calls = 0
    third_call = asyncio.Event()

    async def flaky_get() -> str | None:
        nonlocal calls
        calls += 1
        if calls >= 3:
            third_call.set()
            return RATE_20
        raise ConnectionError("redis down")

    watcher = ConfigWatcher(RolloutConfig(), deadline_s=DEADLINE_S, redis_get=flaky_get, interval_s=0.01)
    applied = asyncio.Event()
    watcher.listeners.append(lambda config: applied.set())
    watcher.start()
    try:
        await asyncio.wait_for(applied.wait(), timeout=10)  # a bound on the wait, not a timing check
    finally:
        await watcher.close()
    assert third_call.is_set() and watcher.current.shadow.rate == 0.2 and watcher.last_error is None


async def test_bytes_and_empty_values_from_redis() -> None:
    value: bytes | None = RATE_20.encode()

    async def get() -> bytes | None:
        return value

    watcher = ConfigWatcher(RolloutConfig(), deadline_s=DEADLINE_S, redis_get=get)
    assert await watcher.check_now() is True and watcher.current.shadow.rate == 0.2
    value = b"  \n"  # an empty value counts as none: back to the initial config
    assert await watcher.check_now() is True and watcher.current == RolloutConfig()


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="interval_s must be > 0, got 0"):
        ConfigWatcher(RolloutConfig(), deadline_s=DEADLINE_S, interval_s=0)


async def test_the_config_loop_survives_malformed_values_and_applies_the_next_good_one(
    redis_url: str,
) -> None:
    client = Redis.from_url(redis_url)
    watcher = ConfigWatcher(
        RolloutConfig(), deadline_s=DEADLINE_S, redis_get=lambda: client.get(REDIS_KEY), interval_s=0.01
    )
    try:
        watcher.start()
        for bad in (b"\xff\xfe not utf-8", "not = = toml", INVALID, "a = " + "[" * 100_000, '{"shadow": []}'):
            seen = background_errors("rollout_config")
            await client.set(REDIS_KEY, bad)
            await until(lambda seen=seen: background_errors("rollout_config") > seen)  # type: ignore[misc]
            assert watcher.current == RolloutConfig()  # the serving config stays
        await client.set(REDIS_KEY, RATE_20)
        await until(lambda: watcher.current.shadow.rate == 0.2)
        assert watcher.last_error is None and watcher._task is not None and not watcher._task.done()
    finally:
        await watcher.close()
        await client.aclose()
