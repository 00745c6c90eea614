"""Which index version each serving process holds: heartbeats with a lease, next to the versions.

Every serving process writes ``<versions>/replicas/<replica>.json`` (:class:`ReplicaLease`) when it starts,
each time it switches version, and every heartbeat; the record carries its own expiry. A lease that has
not been renewed by then is dead: the process stopped, hung, or lost the disk. The ingest prunes no version
a live lease names (:meth:`VersionStore.prune`'s ``protect``), so a process that is still catching up finds
the version it holds on disk and syncs from it in O(change); ``GET /admin/index`` lists the live leases,
and an ingest job reports when every live replica serves what it published.

The leases live on the data dir's filesystem, like the versions they protect: every process that serves
from these versions can write them, with or without Redis. A file per replica, replaced atomically, read
by listing the folder: nothing to coordinate, and a crashed process's lease expires on its own.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

LEASES_DIR = "replicas"
FORGET_AFTER_S = 3600.0  # a lease expired this long ago is deleted by the next reader
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class ReplicaLease:
    replica: str  # the process's name (RAG_REPLICA_ID, or host:pid)
    version: str | None  # the index version it serves (None: nothing published yet)
    pid: int
    host: str
    started_at: float  # wall-clock seconds
    switched_at: float | None  # when it started serving ``version``
    renewed_at: float
    expires_at: float

    def live(self, now: float) -> bool:
        return now < self.expires_at


class ReplicaLeases:
    """The leases of one collection's serving processes (``root``: its versions folder)."""

    def __init__(self, root: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.folder = root / LEASES_DIR
        self._clock = clock

    def renew(self, lease: ReplicaLease) -> None:
        """Write (or replace) ``lease``: atomic, so a reader sees the old record or the new one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(lease.replica)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(lease), sort_keys=True) + "\n")
        os.replace(tmp, path)

    def release(self, replica: str) -> None:
        """A process that stops cleanly gives its lease up (no wait for it to expire)."""
        self._path(replica).unlink(missing_ok=True)

    def all(self) -> list[ReplicaLease]:
        """Every readable lease, live or not, by replica name; long-dead ones are deleted on the way."""
        if not self.folder.is_dir():
            return []
        now = self._clock()
        leases = []
        for path in sorted(self.folder.glob("*.json")):
            try:
                lease = ReplicaLease(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError):
                continue  # being replaced, or not ours: skip
            if now - lease.expires_at > FORGET_AFTER_S:
                path.unlink(missing_ok=True)
                continue
            leases.append(lease)
        return leases

    def live(self) -> list[ReplicaLease]:
        now = self._clock()
        return [lease for lease in self.all() if lease.live(now)]

    def versions(self) -> set[str]:
        """The versions live replicas serve: not to be pruned."""
        return {lease.version for lease in self.live() if lease.version is not None}

    def _path(self, replica: str) -> Path:
        return self.folder / f"{_SAFE.sub('_', replica)}.json"
