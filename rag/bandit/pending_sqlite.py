"""Pending decisions shared through a SQLite file: every process on one machine that serves a data dir.

Without Redis, the service keeps them in ``<data_dir>/feedback/<collection>-pending.sqlite`` (it names
the file; the folder is created), so feedback reaches whichever ``rag serve`` process or ``--workers``
worker it lands on, not only the one that answered. The contract is :class:`~rag.bandit.pending.
SharedDecisions`'s, the same as Redis's:

    pending(id INTEGER PRIMARY KEY, tenant, request_id, expires_at, decision)   UNIQUE (tenant, request_id)
    tenants(tenant PRIMARY KEY, n)      rows per tenant, kept by triggers on pending (the cap costs no COUNT)

- **put**: one ``BEGIN IMMEDIATE`` transaction: delete every expired row (an index on ``expires_at``: one
  seek when none is), delete the (tenant, request id) row it replaces, insert, and past ``max_entries``
  rows of that tenant delete its oldest (lowest ``id``: rows are numbered in write order).
- **take**: one ``DELETE … WHERE tenant = ? AND request_id = ? RETURNING`` statement, its own
  transaction: of any number of processes taking one decision, exactly one gets it; an expired row is
  deleted and not returned.
- **Durability**: WAL, ``synchronous = NORMAL`` (a commit is not fsynced; a checkpoint is): a crash of a
  process loses nothing it committed and never leaves a torn row; a power loss may lose the last commits
  — decisions awaiting feedback, which the service can afford. ``busy_timeout`` waits for another
  process's transaction (each lasts well under a millisecond).
- **Threads**: each store has one connection on one thread of its own; every call runs there (the event
  loop never waits on the file, and the calls of one process are serialised without a lock and without
  holding the loop's default pool).
- **Cost** (measured, 2 cores at load ~3, through :class:`~rag.bandit.pending.PendingDecisions`): about
  0.4 CPU-ms per decision written and 0.3 per decision taken, 0.12 of each the hop to the thread; 0.5 and
  0.33 with a tenant at its 100k cap (a 38 MB file); the same with two processes writing at once.
- **One machine**: WAL needs shared memory between the processes, so the file must not be shared over a
  network volume; replicas on several machines share decisions through Redis.
- **Failures never fail a query**: busy past the timeout, disk full or an I/O error → ``SharedUnavailable``
  for that call (the decision stays in its process). A file that cannot be opened or created, is not a
  database, is corrupt, or has another schema → logged once and the store turns itself off for this
  process (every later call is ``SharedUnavailable`` without touching the file): the service keeps
  answering, with feedback kept in each process, until the file is removed or repaired and the service
  restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from rag.bandit.pending import SharedUnavailable
from rag.errors import RagError

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 1  # PRAGMA user_version of a file this module wrote
BUSY_TIMEOUT_S = 2.0  # how long a call waits for another process's transaction before giving up

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    request_id TEXT NOT NULL,
    expires_at REAL NOT NULL,
    decision TEXT NOT NULL,
    UNIQUE (tenant, request_id)
);
CREATE INDEX IF NOT EXISTS pending_by_tenant ON pending (tenant, id);
CREATE INDEX IF NOT EXISTS pending_by_expiry ON pending (expires_at);
CREATE TABLE IF NOT EXISTS tenants (tenant TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
CREATE TRIGGER IF NOT EXISTS pending_added AFTER INSERT ON pending BEGIN
    INSERT INTO tenants (tenant, n) VALUES (new.tenant, 1) ON CONFLICT (tenant) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER IF NOT EXISTS pending_removed AFTER DELETE ON pending BEGIN
    UPDATE tenants SET n = n - 1 WHERE tenant = old.tenant;
END;
PRAGMA user_version = {SCHEMA_VERSION};
COMMIT;
"""

# errors that concern one call, not the file: another process holds the lock, the disk is full or failing
_TRANSIENT = {sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR}


class SqliteDecisions:
    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_s: float = BUSY_TIMEOUT_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``path``: the database file (it and its folder are created on first use); ``clock``: the time
        expiries are written and checked with (every process on the machine shares ``time.time``)."""
        if not busy_timeout_s > 0:
            raise ValueError(f"busy_timeout_s must be > 0, got {busy_timeout_s}")
        self.path = Path(path)
        self.busy_timeout_s = busy_timeout_s
        self._clock = clock
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pending-sqlite")
        self._conn: sqlite3.Connection | None = None  # opened and used on self._thread only
        self.unusable: str | None = None  # why the file was given up on (logged once)

    async def open(self) -> bool:
        """Open the file now (else the first call does): whether it is usable. An unusable file is logged
        here, once; a busy one is tried again by the next call."""
        with contextlib.suppress(SharedUnavailable):
            await self._run(lambda conn: None)
        return self.unusable is None

    async def put(
        self, tenant: str, request_id: str, decision: str, *, ttl_s: float, max_entries: int
    ) -> None:
        now = self._clock()

        def put(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM pending WHERE expires_at <= ?", (now,))
                conn.execute("DELETE FROM pending WHERE tenant = ? AND request_id = ?", (tenant, request_id))
                conn.execute(
                    "INSERT INTO pending (tenant, request_id, expires_at, decision) VALUES (?, ?, ?, ?)",
                    (tenant, request_id, now + ttl_s, decision),
                )
                (n,) = conn.execute("SELECT n FROM tenants WHERE tenant = ?", (tenant,)).fetchone()
                if n > max_entries:
                    conn.execute(
                        "DELETE FROM pending WHERE id IN "
                        "(SELECT id FROM pending WHERE tenant = ? ORDER BY id LIMIT ?)",
                        (tenant, n - max_entries),
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

        await self._run(put)

    async def take(self, tenant: str, request_id: str) -> str | None:
        now = self._clock()

        def take(conn: sqlite3.Connection) -> str | None:
            rows = conn.execute(
                "DELETE FROM pending WHERE tenant = ? AND request_id = ? RETURNING decision, expires_at",
                (tenant, request_id),
            ).fetchall()
            if not rows:
                return None
            decision, expires_at = rows[0]
            return str(decision) if expires_at > now else None

        return await self._run(take)

    async def close(self) -> None:
        await asyncio.get_running_loop().run_in_executor(self._thread, self._disconnect)
        self._thread.shutdown(wait=False)

    # -- on the store's thread ---------------------------------------------------------------------------
    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.unusable is not None:  # given up: no hop to the thread
            raise SharedUnavailable(f"{self.path}: {self.unusable}")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._call, fn)

    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self.unusable is not None:
            raise SharedUnavailable(f"{self.path}: {self.unusable}")
        try:
            if self._conn is None:
                self._conn = self._connect()
            return fn(self._conn)
        except sqlite3.Error as exc:
            why = f"{type(exc).__name__}: {exc}"[:300]
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _TRANSIENT:
                log.debug("pending decisions: %s: %s", self.path, why)
                raise SharedUnavailable(f"{self.path}: {why}") from exc
            self._give_up(why)
            raise SharedUnavailable(f"{self.path}: {why}") from exc
        except (OSError, _Unusable) as exc:  # the folder cannot be created; another schema
            self._give_up(f"{type(exc).__name__}: {exc}"[:300])
            raise SharedUnavailable(f"{self.path}: {exc}") from exc

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
        try:
            (mode,) = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode).lower() != "wal":
                raise _Unusable(f"journal mode {mode!r}, not WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version == 0:  # a new file (or one another process is creating: the statements are idempotent)
                conn.executescript(_SCHEMA)
            elif version != SCHEMA_VERSION:
                raise _Unusable(f"schema version {version}, this code reads {SCHEMA_VERSION}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _give_up(self, why: str) -> None:
        self.unusable = why
        log.error(
            "pending decisions: %s is unusable (%s); feedback is kept in each process from now on (it must "
            "reach the process that answered) until the file is removed or repaired and the service "
            "restarted",
            self.path,
            why,
        )
        self._disconnect()

    def _disconnect(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.Error):
                conn.close()


class _Unusable(RagError, RuntimeError):
    """The file is a database this module cannot use."""
