"""Replicas' bandit updates add up: two SharedBandits over one store (memory, a file, a real Redis) end
where one bandit fed both streams ends; a merge whose outcome was unknown is applied once; an empty or
unusable store is seeded, not reset; a state saved by the last-save-wins code loads and merges."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import numpy as np
import pytest

from rag.bandit.delta import Delta
from rag.bandit.store import BanditStore, FileStore, MemoryStore, RedisStore, State
from rag.bandit.sync import WRITERS, SharedBandit
from rag.bandit.tenants import TenantBandits
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis, RedisUnavailable

pytestmark = pytest.mark.anyio

ARMS = ["bm25", "hybrid", "rerank"]
DIM = 3


def restore(state: State | None) -> TenantBandits:
    if state is None:
        return TenantBandits(ARMS, DIM, shared_weight=0.2, epsilon=0.1)
    return TenantBandits.from_state(state, shared_weight=0.2, arms=ARMS, dim=DIM)


def replica(store: BanditStore | None, **kw: object) -> SharedBandit:
    return SharedBandit(restore(None), store, restore, **kw)  # type: ignore[arg-type]


def stream(seed: int, n: int) -> list[tuple[str, str, list[float], float]]:
    """``n`` observations: (tenant, arm, x, reward)."""
    rng = np.random.default_rng(seed)
    return [
        (
            str(rng.choice(["acme", "globex", "initech"])),
            str(rng.choice(ARMS)),
            [1.0, *rng.normal(size=DIM - 1).tolist()],
            float(rng.uniform(-1, 1)),
        )
        for _ in range(n)
    ]


def assert_same_bandit(got: TenantBandits, want: TenantBandits) -> None:
    """Equal A, b and counts in the shared model and every tenant's own model (float tolerance)."""
    g, w = got.to_state(), want.to_state()
    assert sorted(g["tenants"]) == sorted(w["tenants"])
    for a, b in [(g, w), *((g["tenants"][t], w["tenants"][t]) for t in w["tenants"])]:
        assert a["counts"] == b["counts"]
        for arm in ARMS:
            assert np.allclose(a["A"][arm], b["A"][arm], rtol=1e-12, atol=1e-12)
            assert np.allclose(a["b"][arm], b["b"][arm], rtol=1e-12, atol=1e-12)


def redis_at(url: str, timeout_s: float = 0.5) -> GuardedRedis:
    return GuardedRedis.connect(url, Breaker("redis", BreakerPolicy()), timeout_s=timeout_s, collection="svc")


@pytest.fixture(params=["memory", "file", "redis"])
async def store_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[], BanditStore]]:
    """Stores that see one saved state: one MemoryStore, FileStores on one path, RedisStores on one key."""
    if request.param == "memory":
        memory = MemoryStore()
        yield lambda: memory
    elif request.param == "file":
        yield lambda: FileStore(tmp_path / "bandit" / "svc.json")
    else:
        url = request.getfixturevalue("redis_url")
        clients: list[GuardedRedis] = []

        def make() -> BanditStore:
            clients.append(redis_at(url))
            return RedisStore(clients[-1])

        yield make
        for client in clients:
            await client.close()


async def test_interleaved_updates_on_two_replicas_equal_one_replica_fed_both(
    store_factory: Callable[[], BanditStore],
) -> None:
    one, two = replica(store_factory()), replica(store_factory())
    await one.load()
    await two.load()
    alone = restore(None)
    first, second = stream(1, 120), stream(2, 90)
    for i in range(120):  # interleaved, with syncs at odd moments on each side
        for r, obs in ((one, first[i]), (two, second[i] if i < len(second) else None)):
            if obs is not None:
                r.update(*obs)
                alone.update(*obs)
        if i % 17 == 0:
            await one.sync()
        if i % 23 == 5:
            await two.sync()
    await one.sync()
    await two.sync()
    await one.sync()  # reads what two merged last
    assert one.pending == two.pending == 0
    assert_same_bandit(one.bandits, alone)
    assert_same_bandit(two.bandits, alone)
    fresh = replica(store_factory())
    await fresh.load()  # a replica started now serves everything learnt
    assert_same_bandit(fresh.bandits, alone)


async def test_updates_made_while_a_merge_is_in_flight_are_kept(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "svc.json")  # merges in a worker thread: the event loop runs meanwhile
    r = replica(store)
    alone = restore(None)
    for obs in stream(3, 10):
        r.update(*obs)
        alone.update(*obs)
    import asyncio

    merge = asyncio.create_task(r.sync())
    await asyncio.sleep(0)  # the merge has started: its batch is taken
    late = stream(4, 5)
    for obs in late:
        r.update(*obs)
        alone.update(*obs)
    await merge
    assert_same_bandit(r.bandits, alone)  # the late updates are served...
    assert r.pending == 5  # ...and merged next time
    await r.sync()
    again = replica(store)
    await again.load()
    assert_same_bandit(again.bandits, alone)


async def test_a_merge_whose_outcome_was_unknown_is_applied_once() -> None:
    """The write lands but the caller hears a failure (a Redis timeout after the write): the next sync
    must not add the same updates again."""
    inner = MemoryStore()

    class LostReply:
        fail_after_write = True

        async def load(self, *, if_changed: bool = False) -> State | None:
            return await inner.load(if_changed=if_changed)

        async def save(self, state: State) -> None:
            await inner.save(state)

        async def merge(self, combine):  # type: ignore[no-untyped-def]
            state = await inner.merge(combine)
            if self.fail_after_write:
                self.fail_after_write = False
                raise RedisUnavailable("redis unavailable: TimeoutError")
            return state

    r = replica(LostReply())
    alone = restore(None)
    for obs in stream(5, 8):
        r.update(*obs)
        alone.update(*obs)
    with pytest.raises(RedisUnavailable):
        await r.sync()
    assert r.pending == 8  # as far as it knows, not merged
    more = stream(6, 4)
    for obs in more:
        r.update(*obs)
        alone.update(*obs)
    await r.sync()  # carries both batches; the first is in the store already
    assert r.pending == 0
    assert_same_bandit(r.bandits, alone)
    stored = restore(await inner.load())
    assert_same_bandit(stored, alone)


async def test_an_empty_store_is_seeded_with_what_the_replica_knew() -> None:
    """Redis restarted empty: the next merge writes the merged state last read plus the new updates,
    not the new updates alone."""
    store = MemoryStore()
    r, alone = replica(store), restore(None)
    for obs in stream(7, 12):
        r.update(*obs)
        alone.update(*obs)
    await r.sync()
    empty = MemoryStore()
    r.store = empty  # the same key, after a restart that lost it
    for obs in stream(8, 3):
        r.update(*obs)
        alone.update(*obs)
    await r.sync()
    assert_same_bandit(restore(await empty.load()), alone)


async def test_an_unusable_stored_state_is_reported_and_replaced() -> None:
    store = MemoryStore()
    other = TenantBandits(["x", "y"], 2, shared_weight=0.2)  # learnt for other arms
    await store.save(other.to_state())
    seen: list[ValueError] = []
    r = replica(store, on_invalid=seen.append)
    with pytest.raises(ValueError, match="arms mismatch"):
        await r.load()
    alone = restore(None)
    for obs in stream(9, 6):
        r.update(*obs)
        alone.update(*obs)
    await r.sync()
    assert len(seen) == 1 and "arms mismatch" in str(seen[0])
    assert_same_bandit(restore(await store.load()), alone)


@pytest.mark.parametrize("tenants", [True, False])
async def test_a_state_saved_by_the_last_save_wins_code_loads_and_merges(tenants: bool) -> None:
    """The old stores wrote ``TenantBandits.to_state()`` (or, before tenants, one LinUCB's state) with no
    ``writers``: it loads as it is, and merges add to it."""
    old = restore(None)
    for obs in stream(10, 15):
        old.update(*obs)
    saved = old.to_state() if tenants else old.shared.to_state()
    store = MemoryStore()
    await store.save(saved)
    r = replica(store)
    await r.load()
    assert r.bandits.counts == old.counts
    expected = restore(saved)
    for obs in stream(11, 7):
        r.update(*obs)
        expected.update(*obs)
    await r.sync()
    stored = await store.load()
    assert stored is not None and r.writer in stored[WRITERS]
    assert_same_bandit(restore(stored), expected)


async def test_a_delta_adds_up_to_the_updates() -> None:
    delta, direct = Delta(), restore(None)
    base = restore(None)
    for obs in stream(12, 30):
        delta.add(*obs)
        direct.update(*obs)
    base.absorb(delta)
    assert delta.updates == 30
    assert_same_bandit(base, direct)


async def test_refresh_reads_other_replicas_updates_without_writing(redis_url: str) -> None:
    a_client, b_client = redis_at(redis_url), redis_at(redis_url)
    try:
        a, b = replica(RedisStore(a_client)), replica(RedisStore(b_client))
        alone = restore(None)
        for obs in stream(13, 9):
            a.update(*obs)
            alone.update(*obs)
        await a.sync()
        written = await a_client.run(lambda r: r.get("rag:svc:bandit"))
        await b.sync()  # nothing of its own: reads, writes nothing
        assert await b_client.run(lambda r: r.get("rag:svc:bandit")) == written
        assert_same_bandit(b.bandits, alone)
    finally:
        await a_client.close()
        await b_client.close()


async def test_replicas_merging_into_one_file_at_once_lose_nothing(tmp_path: Path) -> None:
    """Processes sharing ``<data_dir>/bandit`` (one machine): concurrent merges take turns (flock)."""
    import asyncio

    path = tmp_path / "bandit" / "svc.json"
    replicas = [replica(FileStore(path)) for _ in range(3)]
    alone = restore(None)
    for round_ in range(5):
        for i, r in enumerate(replicas):
            for obs in stream(100 * round_ + i, 4):
                r.update(*obs)
                alone.update(*obs)
        await asyncio.gather(*(r.sync() for r in replicas))
    await asyncio.gather(*(r.sync() for r in replicas))
    assert_same_bandit(restore(await FileStore(path).load()), alone)
