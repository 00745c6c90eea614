"""Following the published index version: every process serves what was last published, within a poll.

Any process may publish (the admin route of one replica, ``rag ingest``, a worker); the others learn of it
by reading the version pointer (``CURRENT``, a few bytes) every ``RAG_VERSION_POLL_MS`` — or at once, with
Redis: a replica that publishes announces the version on the deployment's channel
(``rag:<c>:index:published``) and every follower subscribed to it checks the pointer then. The poll stays:
an announcement lost to a Redis outage (or a publish by ``rag ingest``, which does not announce) costs at
most one poll interval. A new version is
loaded in a worker thread — the process's own vector shard brought to it first
(:mod:`rag.index.shard_sync`), then the snapshot and BM25 built — and switched to atomically
(:meth:`Lifecycle.open_index`): a query runs whole on the version it started on.

Each step also renews this process's lease (:mod:`rag.index.replica_leases`): the version it serves, with
an expiry ``RAG_REPLICA_LEASE_S`` ahead. The ingest keeps on disk every version a live lease names. A
process that finds its own lease had expired before it could renew it (it was stopped, or could not
write) no longer counts on what it holds: it compares its shard with the published version in full
before it serves on (:meth:`Runtime.resync`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable

from rag import metrics
from rag.index.replica_leases import ReplicaLease, ReplicaLeases
from rag.index.versions import VersionStore
from rag.resilience.background import LoopErrors, cancel_and_wait, run_every
from rag.resilience.redis import GuardedRedis, RedisUnavailable
from rag.service.lifecycle import Lifecycle, Phase

log = logging.getLogger(__name__)

LOOP = "version_follower"  # rag_background_errors_total's loop label


class VersionFollower:
    def __init__(
        self,
        lifecycle: Lifecycle,
        *,
        replica: str,
        poll_s: float,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._lifecycle = lifecycle
        self._redis: GuardedRedis | None = None
        self._wake = asyncio.Event()  # an announcement: check the pointer now
        self.announcements = 0  # announcements heard
        self.replica = replica
        self.poll_s = poll_s
        self.lease_s = lease_s
        self._clock = clock
        self._versions = VersionStore(lifecycle.settings.versions_dir)
        self.leases = ReplicaLeases(self._versions.root, clock=clock)
        self._started_at = clock()
        self._expires_at: float | None = None
        self._served: str | None = None
        self._switched_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.switches = 0  # versions switched to by this follower (not the first load)

    def start(self, redis: GuardedRedis | None = None) -> None:
        """Follow; with ``redis``, also hear (and make) announcements."""
        self._redis = redis
        follow = run_every(self.poll_s, self.step, LoopErrors(LOOP), wake=self._wake)
        self._tasks.append(asyncio.create_task(follow, name="rag-version-follower"))
        if redis is not None:
            self._tasks.append(asyncio.create_task(self._listen(redis), name="rag-announcements"))

    async def _listen(self, redis: GuardedRedis) -> None:
        """Wake the follower on each announcement; subscribe again (after a lease's worth of waiting at most)
        when Redis fails — the poll goes on meanwhile."""
        retry_s = self.poll_s
        while True:
            try:
                async for _ in redis.listen(redis.keys.index_published, wait_s=self.lease_s / 2):
                    self.announcements += 1
                    retry_s = self.poll_s
                    self._wake.set()
            except RedisUnavailable as exc:
                log.debug("version announcements: %s", exc)
            await asyncio.sleep(retry_s)
            retry_s = min(retry_s * 2, self.lease_s)

    async def announce(self, version: str) -> None:
        """Tell the other followers that ``version`` was published (best effort: they poll anyway)."""
        if self._redis is None:
            return
        redis = self._redis
        try:
            await redis.run(lambda r: r.publish(redis.keys.index_published, version))
        except RedisUnavailable as exc:
            log.info("publish of %s not announced (the others find it by polling): %s", version, exc)

    async def step(self) -> None:
        """Switch to the published version if it is newer than the one served; renew the lease (also
        while a switch loads, which can take seconds on a large index)."""
        lifecycle = self._lifecycle
        if lifecycle.phase is Phase.LOADING:
            return
        lapsed = self._expires_at is not None and self._clock() >= self._expires_at
        self.renew()
        if lifecycle.phase is Phase.FAILED:
            if lifecycle.compute is None:  # the models failed: nothing to retry here
                return
            # the index failed to open (e.g. a shard that another process's start-up has yet to make
            # fillable): try again each poll; on success the process becomes ready
            await self._renewing(asyncio.to_thread(lifecycle.open_index))
            lifecycle.load_error = None
        runtime = lifecycle.runtime
        if lapsed and runtime is not None:
            log.warning("this replica's lease had expired; checking its vector shard in full")
            metrics.REPLICA_LEASE_LAPSES.inc()
            await self._renewing(asyncio.to_thread(runtime.resync))
        current = self._versions.current()
        if current is not None and current != self.served_version():
            await self._renewing(asyncio.to_thread(lifecycle.open_index))
        elif lifecycle.phase is Phase.READY and lifecycle.candidate_changed():  # staged, restaged or gone
            await self._renewing(asyncio.to_thread(lifecycle.follow_candidate))
        lifecycle.close_retired()
        self.renew()

    async def _renewing(self, work: Awaitable[None]) -> None:
        """Await ``work``, renewing the lease every poll meanwhile."""
        task = asyncio.ensure_future(work)
        while not task.done():
            await asyncio.wait({task}, timeout=self.poll_s)
            if not task.done():
                self.renew()
        task.result()

    def served_version(self) -> str | None:
        runtime = self._lifecycle.runtime
        return runtime.snapshot.version if runtime is not None else None

    def renew(self) -> None:
        now = self._clock()
        served = self.served_version()
        if served != self._served:
            self.switches += self._served is not None
            self._served, self._switched_at = served, now
        self._expires_at = now + self.lease_s
        self.leases.renew(
            ReplicaLease(
                replica=self.replica,
                version=served,
                pid=os.getpid(),
                host=socket.gethostname(),
                started_at=self._started_at,
                switched_at=self._switched_at,
                renewed_at=now,
                expires_at=self._expires_at,
            )
        )

    async def close(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []
        try:
            self.leases.release(self.replica)
        except OSError as exc:
            log.warning("replica lease not released: %s", exc)


def replica_name(configured: str | None) -> str:
    """This process's name among the replicas: ``RAG_REPLICA_ID``, else host:pid."""
    return configured or f"{socket.gethostname()}:{os.getpid()}"
