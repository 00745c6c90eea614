"""Bandit state stores: memory, an atomically replaced file, and one key per deployment in a real
redis-server (behind the Redis breaker)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rag.bandit.linucb import LinUCB
from rag.bandit.store import BanditStore, FileStore, MemoryStore, RedisStore
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis, RedisUnavailable

pytestmark = pytest.mark.anyio


def learnt_state() -> dict:
    bandit = LinUCB(["bm25", "hybrid"], 2, epsilon=0.1)
    bandit.update("hybrid", [1.0, 0.5], 0.8)
    bandit.update("bm25", [1.0, -0.5], 0.6)
    return bandit.to_state()


async def round_trip(store: BanditStore) -> None:
    assert await store.load() is None
    state = learnt_state()
    await store.save(state)
    loaded = await store.load()
    assert loaded == state and loaded is not state
    assert LinUCB.from_state(loaded, arms=["bm25", "hybrid"], dim=2).to_state() == state
    await store.save({**state, "counts": {"bm25": 5, "hybrid": 7}})
    assert (await store.load())["counts"] == {"bm25": 5, "hybrid": 7}  # type: ignore[index]


async def test_memory_store_round_trip_without_aliasing() -> None:
    store = MemoryStore()
    await round_trip(store)
    state = await store.load()
    assert state is not None
    state["dim"] = 99
    assert (await store.load())["dim"] == 2  # type: ignore[index]


async def test_file_store_round_trip_leaves_only_the_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bandit.json"
    await round_trip(FileStore(path))
    assert sorted(p.name for p in path.parent.iterdir()) == ["bandit.json"]
    assert json.loads(path.read_text())["schema"] == 1


async def test_a_failed_file_write_keeps_the_old_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileStore(tmp_path / "bandit.json")
    await store.save(learnt_state())

    def crash(src: str, dst: str) -> None:
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        await store.save({**learnt_state(), "dim": 3})
    monkeypatch.undo()
    assert (await store.load()) == learnt_state()
    assert [p.name for p in tmp_path.iterdir()] == ["bandit.json"]  # the temp file was removed


async def test_a_corrupt_file_is_reported_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bandit.json"
    path.write_text("{not json")
    with pytest.raises(ValueError, match=f"bandit state in {path} is not valid JSON"):
        await FileStore(path).load()
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must be a JSON object, got list"):
        await FileStore(path).load()


async def test_a_state_that_is_not_json_is_refused() -> None:
    with pytest.raises(ValueError, match="not JSON-safe"):
        await MemoryStore().save({"alpha": float("nan")})


def redis_at(url: str, collection: str = "svc", timeout_s: float = 0.5) -> GuardedRedis:
    return GuardedRedis.connect(
        url, Breaker("redis", BreakerPolicy()), timeout_s=timeout_s, collection=collection
    )


async def test_redis_store_round_trip(redis_url: str) -> None:
    redis, other = redis_at(redis_url), redis_at(redis_url, collection="other")
    try:
        await round_trip(RedisStore(redis))
        assert await redis.run(lambda r: r.exists("rag:svc:bandit"))
        assert await RedisStore(other).load() is None  # another deployment's bandit is its own
    finally:
        await redis.close()
        await other.close()


async def test_a_redis_failure_is_redis_unavailable() -> None:
    redis = redis_at("redis://127.0.0.1:1/0", timeout_s=0.05)
    try:
        with pytest.raises(RedisUnavailable, match="ConnectionError"):
            await RedisStore(redis).load()
    finally:
        await redis.close()


async def test_merge_replaces_the_state_by_its_combination(tmp_path: Path) -> None:
    for store in (MemoryStore(), FileStore(tmp_path / "m" / "bandit.json")):
        seen: list[object] = []

        def add_one(saved: dict | None, seen: list[object] = seen) -> dict:
            seen.append(saved)
            return {"n": (saved or {"n": 0})["n"] + 1}

        assert await store.merge(add_one) == {"n": 1}
        assert await store.merge(add_one) == {"n": 2}
        assert seen == [None, {"n": 1}] and await store.load() == {"n": 2}
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["bandit.json"]  # the lock leaves no file


async def test_merge_treats_an_unreadable_state_as_none(tmp_path: Path) -> None:
    path = tmp_path / "bandit.json"
    path.write_text("{not json")
    assert await FileStore(path).merge(lambda saved: {"was": saved}) == {"was": None}


async def test_a_redis_merge_that_loses_the_race_reads_again(redis_url: str) -> None:
    """Another replica writes between this merge's read and its write: the write is refused and the
    merge starts over from the new state; past MERGE_TRIES it gives up with nothing written."""
    import redis as sync_redis

    from rag.bandit.store import MERGE_TRIES, MergeConflict

    guarded, other = redis_at(redis_url), sync_redis.Redis.from_url(redis_url)
    try:
        store = RedisStore(guarded)
        calls: list[object] = []

        def racing(saved: dict | None) -> dict:  # runs in a worker thread, between read and write
            calls.append(saved)
            if len(calls) == 1:
                other.set("rag:svc:bandit", '{"n": 10}')  # another replica's merge lands first
            return {"n": (saved or {"n": 0})["n"] + 1}

        assert await store.merge(racing) == {"n": 11}
        assert calls == [None, {"n": 10}] and await store.load() == {"n": 11}

        def always_racing(saved: dict | None) -> dict:
            other.incr("rag:svc:bandit-race")
            other.set("rag:svc:bandit", json.dumps({"n": int(other.get("rag:svc:bandit-race") or 0)}))
            return {"n": -1}

        with pytest.raises(MergeConflict, match=f"{MERGE_TRIES} merge tries"):
            await store.merge(always_racing)
        assert (await store.load())["n"] == MERGE_TRIES  # type: ignore[index]  # never -1
    finally:
        other.close()
        await guarded.close()


@pytest.mark.parametrize("kind", ["file", "redis"])
async def test_a_load_if_changed_skips_the_state_this_store_last_saw(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The periodic read of a replica with nothing new: no state transferred or decoded when no one
    merged since; another writer's merge is read."""
    clients: list[GuardedRedis] = []

    def store() -> BanditStore:
        if kind == "file":
            return FileStore(tmp_path / "bandit.json")
        clients.append(redis_at(request.getfixturevalue("redis_url")))
        return RedisStore(clients[-1])

    try:
        mine, other = store(), store()
        assert await mine.load(if_changed=True) is None  # nothing saved
        await mine.merge(lambda saved: {"n": 1})
        assert await mine.load(if_changed=True) is None  # what it wrote itself
        assert await mine.load() == {"n": 1}  # a plain load always reads
        await other.merge(lambda saved: {"n": (saved or {"n": 0})["n"] + 1})
        assert await mine.load(if_changed=True) == {"n": 2}
        assert await mine.load(if_changed=True) is None
    finally:
        for client in clients:
            await client.close()
