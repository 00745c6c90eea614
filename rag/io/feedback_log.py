"""The feedback log: every accepted ``/feedback``, with the query text and the doc ids its answer showed.

What ``rag feedback export`` turns into training data (BEIR qrels). One JSON object per line
(:class:`FeedbackEvent`, ``"v": 1``)::

    {"v": 1, "ts": 1764412345.1, "tenant": "acme", "request_id": "…", "query": "who hunts mice",
     "shown": ["owl", "cat", "bee"], "rating": null, "clicked": ["cat"], "relevance": null,
     "arm": "hybrid", "replica": "host:1234"}

**Where** (``RAG_DATA_DIR``)::

    <data_dir>/feedback/<collection>-log/<tenant>/<start time ns>-<replica>.jsonl     (segments)

A folder per tenant (tenant scoping: an export of one tenant reads its folder only), and in it segment
files each written by one process only (the process's replica name is in the file name), so processes
never interleave or rotate each other's files. Every process serving the data dir (``--workers N``,
several ``rag serve`` on one machine, replicas on several machines sharing the data dir's volume) writes
its own segments and an export reads them all. Replicas that do not share a volume each keep their own
log: run the export on each, or copy the ``<collection>-log`` folders together (file names never collide).

**Bounded: a ring of segments per tenant, by size.** A process appends to its current segment until it
holds ``max_bytes // SEGMENTS`` bytes, then starts a new one; whenever it starts one (and at its first
write) it deletes the tenant's least recently written segments, of any process, until the tenant's folder
holds at most ``max_bytes`` (the segment it writes is never deleted by itself). So one tenant's log stays
under ``max_bytes`` plus one segment per process writing at that moment, the oldest feedback goes first,
and one tenant's volume never evicts another's. Nothing is held in memory but each tenant's current
segment name and size. A line is at most a few KB (the query is capped at 2,048 characters and a feedback
at 100 doc ids by the API); a line longer than a segment is still written whole.

**Writes** open, append and close the file (``O_APPEND``: one ``write`` per line; the line is whole or
absent after a crash of the process), synchronously on the caller's thread (~0.1 ms: the service calls it
on the event loop, like the decision log). A failing write (disk full, permissions) is logged and the
feedback still applies to the bandit: the log is never on the answer's critical path.

A segment deleted by another process's pruning while this one writes to it is recreated by the next
write (``O_CREAT``), so at most the lines of that race are lost; the reader skips a torn last line.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.tenancy import check_tenant

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
SEGMENTS = 8  # a tenant's log is a ring of about this many segments: the oldest 1/8 goes at a time
MIN_SEGMENT_BYTES = 4096
UNSCOPED = "_unscoped"  # the folder of tenant "" ('_' cannot start a tenant name)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """One accepted feedback on one answer: the signals exactly as sent (the grades are the export's
    business), the query and the doc ids shown, in rank order."""

    tenant: str
    request_id: str
    query: str
    shown: tuple[str, ...]
    rating: float | None = None
    clicked: tuple[str, ...] | None = None
    relevance: Mapping[str, float] | None = None
    arm: str = ""
    ts: float = 0.0
    replica: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)  # fields a later version added

    def to_json(self) -> str:
        return json.dumps(
            {
                **self.extra,
                "v": FORMAT_VERSION,
                "ts": self.ts,
                "tenant": self.tenant,
                "request_id": self.request_id,
                "query": self.query,
                "shown": list(self.shown),
                "rating": self.rating,
                "clicked": None if self.clicked is None else list(self.clicked),
                "relevance": None if self.relevance is None else dict(self.relevance),
                "arm": self.arm,
                "replica": self.replica,
            },
            ensure_ascii=False,
            separators=(",", ":"),
            allow_nan=False,
        )

    @classmethod
    def from_json(cls, line: str) -> FeedbackEvent:
        """An event from :meth:`to_json`'s line; ValueError when it is not one."""
        try:
            d: dict[str, Any] = json.loads(line)
            clicked, relevance, rating = d.get("clicked"), d.get("relevance"), d.get("rating")
            known = {"v", "ts", "tenant", "request_id", "query", "shown", "rating", "clicked", "relevance"}
            return cls(
                tenant=str(d["tenant"]),
                request_id=str(d["request_id"]),
                query=str(d["query"]),
                shown=tuple(str(s) for s in d["shown"]),
                rating=None if rating is None else float(rating),
                clicked=None if clicked is None else tuple(str(c) for c in clicked),
                relevance=None if relevance is None else {str(k): float(v) for k, v in relevance.items()},
                arm=str(d.get("arm", "")),
                ts=float(d.get("ts", 0.0)),
                replica=str(d.get("replica", "")),
                extra={k: v for k, v in d.items() if k not in known | {"arm", "replica"}},
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"not a feedback event: {exc}"[:300]) from None


def log_root(data_dir: Path, collection: str) -> Path:
    """Where a collection's feedback log lives under a data dir (every tenant's folder is below it)."""
    return data_dir / "feedback" / f"{collection}-log"


def tenant_folder(root: Path, tenant: str) -> Path:
    """The folder of ``tenant``'s segments under a log ``root`` (ValueError for an invalid tenant name)."""
    return root / (check_tenant(tenant) or UNSCOPED)


class FeedbackLog:
    """Appends :class:`FeedbackEvent` lines to this process's segment of each tenant's ring (see the
    module docstring). Cheap to build: nothing is touched before the first write."""

    def __init__(
        self,
        root: Path,
        *,
        max_bytes: int,
        replica: str,
    ) -> None:
        """``root``: ``<data_dir>/feedback/<collection>-log``; ``max_bytes``: each tenant's cap (> 0);
        ``replica``: this process's name (host:pid by default), part of its segment names."""
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
        self.root = root
        self.max_bytes = max_bytes
        self.segment_bytes = max(max_bytes // SEGMENTS, MIN_SEGMENT_BYTES)
        self.replica = replica
        self._slug = _UNSAFE.sub("_", replica)[:80] or "replica"
        self._current: dict[str, tuple[Path, int]] = {}  # tenant -> (segment, its size as last written)
        self._failures = 0

    def append(self, event: FeedbackEvent) -> bool:
        """Write ``event`` to its tenant's ring; False (logged) when the write failed."""
        try:
            self._append(event)
            return True
        except OSError as exc:
            self._failures += 1
            if self._failures == 1 or self._failures % 100 == 0:  # logged, not once per feedback
                log.warning("feedback log write failed (%d so far): %s", self._failures, str(exc)[:300])
            return False

    def _append(self, event: FeedbackEvent) -> None:
        data = (event.to_json() + "\n").encode("utf-8")
        folder = tenant_folder(self.root, event.tenant)
        current = self._current.get(event.tenant)
        if current is None or (current[1] > 0 and current[1] + len(data) > self.segment_bytes):
            current = (folder / f"{time.time_ns():020d}-{self._slug}.jsonl", 0)
            folder.mkdir(parents=True, exist_ok=True)
            prune(folder, self.max_bytes, keep=current[0])
        fd = os.open(current[0], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, data)
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        self._current[event.tenant] = (current[0], size)


def prune(folder: Path, max_bytes: int, *, keep: Path | None = None) -> list[Path]:
    """Delete ``folder``'s least recently written segments until the rest hold at most ``max_bytes``
    (``keep`` is never deleted); the deleted paths. A segment another process deletes first is skipped."""
    segments = []
    for path in folder.glob("*.jsonl"):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        segments.append((st.st_mtime_ns, path.name, path, st.st_size))
    segments.sort()
    total = sum(s[3] for s in segments)
    deleted = []
    for _, _, path, size in segments:
        if total <= max_bytes:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        deleted.append(path)
    return deleted


def read_events(root: Path, tenant: str) -> Iterator[FeedbackEvent]:
    """``tenant``'s events in every segment under ``root`` (oldest segment first, lines in order). Only
    the tenant's folder is read, and an event naming another tenant is skipped (a copied file in the wrong
    folder cannot leak it). A line that does not parse (a torn last line) is skipped and logged."""
    folder = tenant_folder(root, tenant)
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.jsonl")):
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:  # pruned meanwhile
            continue
        for n, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                event = FeedbackEvent.from_json(line)
            except ValueError as exc:
                log.warning("%s:%d skipped: %s", path, n, exc)
                continue
            if event.tenant == tenant:
                yield event
