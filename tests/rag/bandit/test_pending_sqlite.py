"""Pending decisions shared through the data dir's SQLite file (no Redis): recorded by one process, taken
by another, once — also when four take at once, in threads or in processes; bounded per tenant, expired
rows never returned and removed at the next write (rows counted); one tenant never reaches another's; a
busy file leaves the decision in process for that call; a corrupt or foreign file is logged once and
everything stays in process."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rag.bandit.decisions import DecisionLog
from rag.bandit.pending import PendingDecisions, SharedUnavailable
from rag.bandit.pending_sqlite import SqliteDecisions

pytestmark = pytest.mark.anyio

X = [1.0, 0.5, -0.25]


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "data" / "feedback" / "test-pending.sqlite"  # its folders do not exist yet


@pytest.fixture
async def processes(db: Path) -> AsyncIterator[Callable[..., PendingDecisions]]:
    """Make processes' PendingDecisions over one file (each its own connection, thread and local log)."""
    made: list[PendingDecisions] = []

    def make(clock: FakeClock | None = None, **log: float) -> PendingDecisions:
        clocks = {} if clock is None else {"clock": clock}
        pending = PendingDecisions(
            DecisionLog(**log, **clocks),  # type: ignore[arg-type]
            SqliteDecisions(db, **clocks),  # type: ignore[arg-type]
        )
        made.append(pending)
        return pending

    yield make
    for pending in made:
        await pending.close()


async def record(p: PendingDecisions, request_id: str, tenant: str = "acme", arm: str = "hybrid") -> None:
    p.record(request_id, tenant, arm, X, 0.9, ["d1", "d2"], allowed=["bm25", "hybrid"], cost=0.02)
    await p.written(tenant, request_id)


def rows(db: Path, tenant: str | None = None) -> int:
    with sqlite3.connect(db) as conn:
        if tenant is None:
            (n,) = conn.execute("SELECT COUNT(*) FROM pending").fetchone()
        else:
            (n,) = conn.execute("SELECT COUNT(*) FROM pending WHERE tenant = ?", (tenant,)).fetchone()
    conn.close()
    return int(n)


async def test_a_decision_recorded_by_one_process_is_taken_by_another_once(
    processes: Callable[..., PendingDecisions], db: Path
) -> None:
    one, two = processes(), processes()
    await record(one, "req-1")
    assert len(one) == 0 and rows(db) == 1  # in the file now, not in process (its folders were created)
    taken = await two.take("req-1", "acme")
    assert taken is not None
    assert (taken.arm, taken.features, taken.propensity) == ("hybrid", tuple(X), 0.9)
    assert (taken.served_doc_ids, taken.allowed, taken.cost) == (("d1", "d2"), ("bm25", "hybrid"), 0.02)
    assert await one.take("req-1", "acme") is None
    assert await two.take("req-1", "acme") is None
    assert rows(db) == 0


async def test_four_takers_of_one_decision_at_once_one_wins(
    processes: Callable[..., PendingDecisions],
) -> None:
    recorder, takers = processes(), [processes() for _ in range(4)]  # four connections, four threads
    for i in range(30):
        await record(recorder, f"race-{i}")
        got = await asyncio.gather(*(t.take(f"race-{i}", "acme") for t in takers))
        assert sum(d is not None for d in got) == 1


TAKER = """
import asyncio, json, sys
from rag.bandit.pending_sqlite import SqliteDecisions

async def main() -> None:
    store = SqliteDecisions(sys.argv[1])
    won = [i for i in range(int(sys.argv[2])) if await store.take("acme", f"p-{i}") is not None]
    await store.close()
    print(json.dumps(won))

asyncio.run(main())
"""


async def test_four_processes_taking_the_same_decisions_take_each_exactly_once(
    processes: Callable[..., PendingDecisions], db: Path
) -> None:
    recorder, n = processes(), 200
    for i in range(n):
        await record(recorder, f"p-{i}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    takers = [
        subprocess.Popen(
            [sys.executable, "-c", TAKER, str(db), str(n)], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    won: list[int] = []
    for taker in takers:
        out, _ = taker.communicate(timeout=120)
        assert taker.returncode == 0
        won += json.loads(out)
    assert sorted(won) == list(range(n))  # every decision taken, none twice
    assert rows(db) == 0


async def test_a_tenant_never_reaches_another_tenants_decision(
    processes: Callable[..., PendingDecisions],
) -> None:
    one, two = processes(), processes()
    await record(one, "shared-id", tenant="acme", arm="hybrid")
    await record(one, "shared-id", tenant="globex", arm="bm25")  # the same client-chosen id
    assert await two.take("shared-id", "initech") is None
    globex = await two.take("shared-id", "globex")
    assert globex is not None and globex.arm == "bm25" and globex.tenant == "globex"
    acme = await two.take("shared-id", "acme")
    assert acme is not None and acme.arm == "hybrid"


async def test_decisions_are_bounded_per_tenant(processes: Callable[..., PendingDecisions], db: Path) -> None:
    one = processes(max_entries=5)
    for i in range(8):
        await record(one, f"r{i}")
    await record(one, "g0", tenant="globex")
    assert rows(db, "acme") == 5 and rows(db, "globex") == 1  # the 5 newest; another tenant's own cap
    two = processes(max_entries=5)
    for i in range(3):
        assert await two.take(f"r{i}", "acme") is None  # dropped past the cap, oldest first
    assert await two.take("r3", "acme") is not None and await two.take("r7", "acme") is not None
    assert rows(db, "acme") == 3
    for i in range(8, 12):  # the count the cap reads follows takes too
        await record(one, f"r{i}")
    assert rows(db, "acme") == 5  # r4, r5 dropped: r6 and r8-r11 left
    assert await two.take("r4", "acme") is None and await two.take("r5", "acme") is None
    assert await two.take("r6", "acme") is not None


async def test_expired_decisions_are_never_returned_and_go_at_the_next_write(
    processes: Callable[..., PendingDecisions], db: Path
) -> None:
    clock = FakeClock()
    one, two = processes(clock, ttl_s=60.0), processes(clock, ttl_s=60.0)
    await record(one, "old-1")
    await record(one, "old-2", tenant="globex")
    clock.now += 30.0
    await record(one, "young")
    clock.now += 31.0  # old-1 and old-2 are 61 s old, young 31 s
    assert rows(db) == 3  # nothing written since they expired: still there...
    assert await two.take("old-1", "acme") is None  # ...but never returned (and removed by the take)
    assert rows(db) == 2
    await record(one, "new", tenant="initech")  # any tenant's write removes every expired row
    assert rows(db) == 2 and rows(db, "globex") == 0
    assert await two.take("young", "acme") is not None
    assert await two.take("new", "initech") is not None


async def test_a_decision_recorded_again_under_one_id_keeps_the_newest(
    processes: Callable[..., PendingDecisions], db: Path
) -> None:
    one, two = processes(), processes()
    one.record("again", "acme", "bm25", X, 1.0, ["d1"])
    one.record("again", "acme", "hybrid", X, 1.0, ["d1"])  # before the first write has landed
    await one.written("acme", "again")
    assert rows(db) == 1
    taken = await two.take("again", "acme")
    assert taken is not None and taken.arm == "hybrid"
    assert await one.take("again", "acme") is None and len(one) == 0


async def test_a_busy_file_keeps_the_decision_in_process_for_that_call(db: Path) -> None:
    store = SqliteDecisions(db, busy_timeout_s=0.05)
    one = PendingDecisions(DecisionLog(), store)
    try:
        assert await store.open()
        holder = sqlite3.connect(db, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # another process's write transaction, held past the timeout
        try:
            await record(one, "during")
            assert len(one) == 1  # the write gave up: kept here
            assert await one.take("during", "acme") is not None  # the take falls back to this process
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert store.unusable is None  # busy is not broken
        await record(one, "after")
        assert len(one) == 0 and rows(db) == 1
    finally:
        await one.close()


async def test_a_corrupt_file_is_logged_once_and_decisions_stay_in_process(
    db: Path, caplog: pytest.LogCaptureFixture
) -> None:
    db.parent.mkdir(parents=True)
    db.write_bytes(b"this is not a database, " * 200)
    store = SqliteDecisions(db)
    one = PendingDecisions(DecisionLog(), store)
    try:
        with caplog.at_level(logging.ERROR, logger="rag.bandit.pending_sqlite"):
            assert not await store.open()
            for i in range(3):
                await record(one, f"r{i}")
                with pytest.raises(SharedUnavailable):
                    await store.take("acme", f"r{i}")
        assert [r.levelno for r in caplog.records] == [logging.ERROR]  # once, naming the file
        assert str(db) in caplog.records[0].getMessage()
        assert len(one) == 3
        assert await one.take("r1", "acme") is not None  # from this process
    finally:
        await one.close()
    assert db.read_bytes().startswith(b"this is not a database")  # left as it was, for an operator


async def test_a_file_with_another_schema_is_not_used(db: Path) -> None:
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    store = SqliteDecisions(db)
    assert not await store.open()
    assert store.unusable is not None and "schema version 99" in store.unusable
    await store.close()


async def test_a_file_corrupted_while_in_use_is_given_up_and_decisions_stay_in_process(
    processes: Callable[..., PendingDecisions], db: Path
) -> None:
    one = processes()
    await record(one, "before")
    assert len(one) == 0
    for part in (db, db.with_name(db.name + "-wal"), db.with_name(db.name + "-shm")):
        if part.exists():  # overwritten in place, under the open connection
            with part.open("r+b") as fh:
                fh.write(b"garbage!" * (part.stat().st_size // 8))
    await record(one, "after")  # the write fails on the corrupt file: kept here, never an error
    assert len(one) == 1
    assert one.shared is not None and one.shared.unusable is not None  # type: ignore[attr-defined]
    assert await one.take("after", "acme") is not None
