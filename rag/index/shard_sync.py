"""Bringing a vector shard to a published version, from the vectors the version's segments carry.

Every process that serves the embedded engine owns its shard (qdrant-edge locks a folder to one process);
the index versions on disk are shared. So the segments are the source of truth for vectors too
(``vectors.npy``, :mod:`rag.index.segments`), and a process brings its own shard to the version it is about
to serve: the points the version has and the shard lacks are upserted, the points no longer needed are
deleted. The ingest does the same to its process's shard after it publishes.

The shard's ``synced.json`` (:class:`SyncRecord`) says which version it holds, and which older one it
still *retains*: a switch keeps the points of the version it leaves, so that queries still running on it
find them (they are deleted by the next switch, as the ingest's garbage collection did) — except a switch
into another vector space (:mod:`rag.index.spaces`), which deletes them at once. Each switch is
then O(what changed), computed in numpy from the segments' point-id arrays. The record is removed while a
sync writes, so a sync that dies half-way is followed by a full one (every stored point id read back:
O(N)), as is a shard whose record names a version no longer on disk, or a shard with no record at all.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.dense.store import VectorStore
from rag.errors import RagError
from rag.index.chunk_table import ChunkRecord
from rag.index.segments import VersionView, read_vectors, segment_chunks, write_vectors
from rag.index.spaces import point_space
from rag.index.versions import VersionStore

log = logging.getLogger(__name__)

UPSERT_GROUP = 512  # points upserted together while a shard is filled


class ShardSyncError(RagError, RuntimeError):
    """The version's segments cannot fill this shard (written before segments carried vectors)."""


@dataclass(frozen=True, slots=True)
class SyncRecord:
    """The version a shard holds, and the one before it whose points it still retains; ``extra``: it
    also holds points of older versions that were protected when they were due (compare in full next)."""

    version: str
    retained: str | None = None
    extra: bool = False

    @classmethod
    def read(cls, path: Path) -> SyncRecord | None:
        try:
            data = json.loads(path.read_text())
            return cls(str(data["version"]), data.get("retained"), bool(data.get("extra", False)))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        record = {"version": self.version, "retained": self.retained, "extra": self.extra}
        tmp.write_text(json.dumps(record) + "\n")
        os.replace(tmp, path)


@dataclass(frozen=True, slots=True)
class SyncReport:
    version: str
    added: int
    deleted: int
    full: bool  # every stored point id was read back (no usable record)


def sync_shard(
    store: VectorStore, versions: VersionStore, target: VersionView, protect: Collection[str] = ()
) -> SyncReport:
    """Make ``store`` hold ``target``'s live points (plus, retained, those of the version it held before).
    ``protect``: versions whose points must stay too (a shared store: the versions live replicas serve).
    A store without a record path (``store.sync_record`` None) is always compared in full. One sync at a
    time per store (an ingest job's and a follower's may meet)."""
    with _lock_of(store):
        return _sync(store, versions, target, protect)


_locks: weakref.WeakKeyDictionary[VectorStore, threading.Lock] = weakref.WeakKeyDictionary()
_locks_guard = threading.Lock()


def _lock_of(store: VectorStore) -> threading.Lock:
    with _locks_guard:
        lock = _locks.get(store)
        if lock is None:
            lock = _locks[store] = threading.Lock()
        return lock


def _sync(
    store: VectorStore, versions: VersionStore, target: VersionView, protect: Collection[str]
) -> SyncReport:
    path = store.sync_record
    record = SyncRecord.read(path) if path is not None else None
    if record is not None and record.version == target.name:
        return SyncReport(target.name, 0, 0, full=False)
    live = target.live_point_array()
    held = _held_view(versions, record)
    if path is not None:
        path.unlink(missing_ok=True)  # a sync that dies from here on is followed by a full one
    log.info("syncing vector shard to %s (it held %s)", target.name, record.version if record else "nothing")
    dropped = _retained_points(versions, record, held)
    held_live = held.live_point_array() if held is not None else None
    if held_live is not None and store.count() < len(held_live):
        dropped = None  # the store lost points its record says it holds (a dropped collection, say)
    # a switch into another vector space (a re-embedded collection, rag.index.spaces) keeps nothing of the
    # version it leaves: vectors of another model crowd every search of the new one
    retain = held is not None and point_space(held.manifest) == point_space(target.manifest)
    if held_live is not None and dropped is not None:  # incremental: O(what changed)
        full = False
        add = np.setdiff1d(live, held_live, assume_unique=True)
        delete = np.setdiff1d(dropped if retain else np.union1d(dropped, held_live), live)
    else:  # read back what the shard holds
        full = True
        stored = np.asarray(sorted(p.encode("ascii") for p in store.all_ids()), dtype="S36")
        keep = live if held_live is None or not retain else np.union1d(live, held_live)
        add = np.setdiff1d(live, stored, assume_unique=True)
        delete = np.setdiff1d(stored, keep, assume_unique=True)
    due = len(delete)
    for name in set(protect) - {target.name}:
        kept = _held_view(versions, SyncRecord(name))
        if kept is not None:
            delete = np.setdiff1d(delete, kept.live_point_array())
    spared = due > len(delete)  # points a live replica still serves: deleted by a later, full sync
    added = _upsert(store, versions, target, add)
    if len(delete):
        store.delete(p.decode("ascii") for p in delete.tolist())
    store.optimize()
    if path is not None:
        SyncRecord(target.name, held.name if held is not None and retain else None, extra=spared).write(path)
    if added or len(delete):
        log.info(
            "vector shard synced to %s: %d points added, %d deleted%s",
            target.name,
            added,
            len(delete),
            " (full comparison)" if full else "",
        )
    return SyncReport(target.name, added, len(delete), full)


def backfill_vectors(store: VectorStore, versions: VersionStore, view: VersionView) -> list[str]:
    """Give the segments of ``view`` that lack vectors (written before segments carried them) the vectors
    ``store`` holds for their rows: the one-time upgrade that lets other processes fill their own shards.
    A segment is given its file only when the store has every row's vector; returns the segments done.
    The file is added atomically next to the segment's others (their content is unchanged)."""
    done = []
    for seg, keys in zip(view.segments, view.keys, strict=True):
        folder = versions.segments_root / seg
        if read_vectors(folder) is not None:
            continue
        ids = [p.decode("ascii") for p in keys.point_ids.tolist()]
        stored = store.stored_vectors(ids)
        if len(stored) < len(set(ids)):
            log.warning("segment %s lacks vectors; the store holds %d of its %d", seg, len(stored), len(ids))
            continue
        vectors = np.stack([stored[p] for p in ids]) if ids else np.empty((0, 0), dtype=np.float32)
        write_vectors(folder, vectors)
        done.append(seg)
    if done:
        log.info("wrote the vectors of %d segments from this process's vector store", len(done))
    return done


def _held_view(versions: VersionStore, record: SyncRecord | None) -> VersionView | None:
    """The version the shard holds, when its folder is still on disk."""
    if record is None or not versions.path(record.version).is_dir():
        return None
    try:
        return VersionView.load(versions, record.version)
    except (OSError, ValueError, KeyError):
        return None


def _retained_points(
    versions: VersionStore, record: SyncRecord | None, held: VersionView | None
) -> np.ndarray | None:
    """The points the shard retains beyond ``held``'s live ones (those ``held`` dropped from the retained
    version, its parent), or None when that cannot be known without reading the shard."""
    if record is None or held is None or record.extra:
        return None
    if record.retained is None:
        return np.empty(0, dtype="S36")
    if held.manifest.get("parent") != record.retained:
        return None
    removed = held.removed_points(versions)
    return None if removed is None else np.unique(removed.astype("S36"))


def payload(chunk: ChunkRecord) -> dict[str, Any]:
    """A chunk's point payload: ``tenant`` and ``acl`` are what searches filter on (keyword indexes);
    ``acl`` only when the chunk has one (the filter reads a missing ``acl`` as "no ACL")."""
    out: dict[str, Any] = {
        "chunk_id": chunk.chunk_id,
        "doc_id": chunk.doc_id,
        "tenant": chunk.tenant,
        "metadata": chunk.metadata,
    }
    if chunk.acl:
        out["acl"] = list(chunk.acl)
    return out


def _upsert(store: VectorStore, versions: VersionStore, target: VersionView, points: np.ndarray) -> int:
    """Upsert ``points`` (sorted point ids, all live in ``target``) with their vectors and payloads."""
    if not len(points):
        return 0
    done = 0
    for chunks, vectors in _rows(versions, target, points):
        store.upsert(
            [c.point_id for c in chunks],
            vectors,
            [payload(c) for c in chunks],
        )
        done += len(chunks)
    return done


def _rows(
    versions: VersionStore, target: VersionView, points: np.ndarray
) -> Iterator[tuple[list[ChunkRecord], np.ndarray]]:
    """Groups of (chunk records, vectors) of ``target``'s live rows whose point is in ``points``."""
    segments: list[str | None] = list(target.segments) or [None]  # before segments: one whole table
    for seg, start, keys in zip(segments, target.offsets, target.keys, strict=True):
        live = ~target.deleted[start : start + len(keys)]
        rows = np.flatnonzero(live & np.isin(keys.point_ids, points))
        if not len(rows):
            continue
        vectors = read_vectors(versions.segments_root / seg) if seg is not None else None
        if vectors is None:
            where = f"segment {seg}" if seg is not None else f"version {target.name}"
            raise ShardSyncError(
                f"{where} has no vectors (written before segments carried them), so this process's vector "
                "shard cannot be filled from it: serve this collection from one process (the one whose "
                "shard holds them), or re-ingest the documents into a new collection"
            )
        chunks = segment_chunks(versions, seg) if seg is not None else []
        for at in range(0, len(rows), UPSERT_GROUP):
            group = rows[at : at + UPSERT_GROUP]
            yield [chunks[r] for r in group.tolist()], np.asarray(vectors[group], dtype=np.float32)
