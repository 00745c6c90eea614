"""Index versions on disk: immutable version folders and an atomically switched ``CURRENT`` pointer.

Layout under ``<data_dir>/versions/<collection>/``::

    collection.json     embedder, dimension and rotation the collection was built with
    rotation.npy        the Matryoshka rotation of the collection's first vector space
    rotation-<h>.npy    that of a space the collection was re-embedded into (a version's ``rotation_file``)
    CURRENT             {"version": "v000003"}; replaced with os.replace, the publish point
    v000003/            manifest.json (its segments), deleted.npy (rows of those segments it does not
                        hold), removed.npz (points it dropped: the garbage collector's input)
    segments/seg-v000002-0/   immutable chunk table + BM25 counts of the rows a version added
                        (:mod:`rag.index.segments`), shared by every version that lists it
    .staging-*/         a version being written; never read, removed by the next ingest

(Versions written before segments held ``chunks.jsonl``, ``bm25_tf.npz`` and ``bm25_vocab.json`` in their
own folder; they are read as they are, and the next ingest writes their rows as its first segment.)

A version is published only after its vectors are in Qdrant and its BM25 files are on disk, so an ingest
that dies at any point leaves the previous version serving.

Invariants:

- **The published versions are a chain**: ``CURRENT`` names the newest, and each manifest's ``parent``
  names the version that was ``CURRENT`` when it was published (ingests hold the lock, so there is one
  writer). The chain ends at a ``parent`` of ``None`` or at a folder already pruned.
- **Numbers grow along the chain**: a new version is numbered above every folder on disk, so above
  ``CURRENT``. Folder names alone say nothing about publication, though: a crash between the folder
  rename and ``CURRENT`` leaves a folder that sorts after the serving one but was never published.
- **A folder numbered above ``CURRENT`` was never published** (``CURRENT`` only moves up); the next ingest
  removes it when it takes the lock (:meth:`VersionStore.discard_unpublished`), so its number is given
  again. Nothing ever served it, so no cache key or replica knows that name.
- **Pruning walks the chain**, never the folder names: it keeps the newest ``keep`` published versions and
  removes the rest, with any folder off the chain numbered below the oldest one kept (left by older code).
- **A segment is named after the version that wrote it** and is complete before that version's folder
  is: one numbered above ``CURRENT`` was never published and goes with its version; one no remaining
  version lists is removed after pruning (:meth:`VersionStore.drop_unreferenced_segments`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SEGMENTS_DIR = "segments"
LOCK_POLL_S = 0.05  # how often a writer waiting for the lock tries again
_POINT_NAMESPACE = uuid.UUID("6f1c3a52-0d8e-4b8e-9a57-3f0d6a1b2c4d")
VERSION_PREFIX = "v"


def point_id(
    chunk_key: str,
    passage: str,
    metadata: dict[str, Any] | None = None,
    *,
    space: str = "",
    acl: tuple[str, ...] = (),
) -> str:
    """Content-addressed Qdrant point id: same (tenant-scoped) chunk id, text and metadata ⇒ same point
    (idempotent upserts; a change ⇒ a new point, so the version still serving keeps its own). ``space``:
    the vector space (the embedder) of a collection re-embedded with another model than it was built with
    (a version's ``point_space``, :mod:`rag.index.reembed`): the same chunk in another space is another
    point, so two spaces never share an id. The collection's first space is ``""`` (ids unchanged).
    ``acl`` (sorted, rag.acl.check_acl) is hashed only when given: a document without one keeps its id, and
    an ACL change is a change (it publishes, and the new point carries the new ACL in its payload)."""
    content = passage if not metadata else passage + "\x00" + json.dumps(metadata, sort_keys=True)
    if acl:
        content += "\x00acl\x00" + "\x1f".join(acl)
    digest = hashlib.sha1(content.encode("utf-8")).hexdigest()
    salt = f"\x00{space}" if space else ""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{chunk_key}\x00{digest}{salt}"))


def version_name(number: int) -> str:
    return f"{VERSION_PREFIX}{number:06d}"


def version_number(name: str) -> int:
    if not (name.startswith(VERSION_PREFIX) and name[1:].isdigit()):
        raise ValueError(f"not a version name: {name!r} (expected like 'v000001')")
    return int(name[1:])


def fsync_dir(path: Path) -> None:
    """Make a rename or a new file in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


class VersionStore:
    """The versions folder of one collection."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def current_file(self) -> Path:
        return self.root / "CURRENT"

    def current(self) -> str | None:
        if not self.current_file.exists():
            return None
        return str(json.loads(self.current_file.read_text())["version"])

    def path(self, name: str) -> Path:
        return self.root / name

    def folders(self) -> list[str]:
        """Every version folder on disk, published or not, by number."""
        if not self.root.exists():
            return []
        names = [p.name for p in self.root.iterdir() if p.is_dir() and _is_version_name(p.name)]
        return sorted(names, key=version_number)

    def parent(self, name: str) -> str | None:
        """The version ``name`` was published on top of (its manifest's ``parent``), or None."""
        try:
            manifest = json.loads((self.path(name) / "manifest.json").read_text())
        except (OSError, ValueError):
            return None
        parent = manifest.get("parent") if isinstance(manifest, dict) else None
        return parent if isinstance(parent, str) and _is_version_name(parent) else None

    def published(self) -> list[str]:
        """The published versions still on disk, oldest first: ``CURRENT`` and its ancestors."""
        chain: list[str] = []
        name = self.current()
        while name is not None and name not in chain and self.path(name).is_dir():
            chain.append(name)
            name = self.parent(name)
        return chain[::-1]

    def unpublished(self) -> list[str]:
        """Version folders numbered above ``CURRENT`` (all of them when nothing is published): an ingest
        died between renaming its folder into place and switching ``CURRENT``."""
        current = self.current()
        floor = version_number(current) if current is not None else 0
        return [n for n in self.folders() if version_number(n) > floor]

    def next_name(self) -> str:
        existing = self.folders()
        return version_name(version_number(existing[-1]) + 1 if existing else 1)

    @contextmanager
    def lock(self, wait_s: float = 0.0) -> Iterator[None]:
        """Exclusive writer lock: one ingest at a time per collection (any process). ``wait_s``: how long
        to wait for another writer to finish before giving up with ``RuntimeError``."""
        self.root.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + wait_s
        with (self.root / ".lock").open("w") as fh:
            while True:
                try:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RuntimeError(
                            f"another ingest is writing collection folder {self.root}"
                            + (f" (waited {wait_s:g} s)" if wait_s else "")
                        ) from None
                    time.sleep(LOCK_POLL_S)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def staging(self) -> Path:
        path = self.root / f".staging-{uuid.uuid4().hex[:12]}"
        path.mkdir(parents=True)
        return path

    def discard_staging(self) -> None:
        for path in self.root.glob(".staging-*"):
            shutil.rmtree(path, ignore_errors=True)

    def discard_unpublished(self) -> list[str]:
        """Remove staging folders, version folders that were never published and their segments (call
        under :meth:`lock`). Returns the version names removed."""
        self.discard_staging()
        doomed = self.unpublished()
        for name in doomed:
            shutil.rmtree(self.path(name), ignore_errors=True)
        current = self.current()
        floor = version_number(current) if current is not None else 0
        for seg in self.segment_names():
            if version_number(_segment_version(seg)) > floor:
                shutil.rmtree(self.segments_root / seg, ignore_errors=True)
        for path in self.segments_root.glob(".staging-*"):
            shutil.rmtree(path, ignore_errors=True)
        return doomed

    @property
    def segments_root(self) -> Path:
        return self.root / SEGMENTS_DIR

    def segment_names(self) -> list[str]:
        if not self.segments_root.is_dir():
            return []
        return sorted(
            p.name for p in self.segments_root.iterdir() if p.is_dir() and p.name.startswith("seg-")
        )

    def drop_unreferenced_segments(self) -> list[str]:
        """Remove the segments that no version folder on disk lists (after :meth:`prune`; call under
        :meth:`lock`). Returns their names."""
        listed: set[str] = set()
        for name in self.folders():
            try:
                manifest = json.loads((self.path(name) / "manifest.json").read_text())
            except (OSError, ValueError):
                continue
            for seg in manifest.get("segments") or []:
                listed.add(str(seg["name"]))
        doomed = [s for s in self.segment_names() if s not in listed]
        for seg in doomed:
            shutil.rmtree(self.segments_root / seg, ignore_errors=True)
        return doomed

    def publish(self, staging: Path, name: str) -> None:
        """Move a complete staging folder into place, then switch ``CURRENT`` to it (atomic)."""
        for file in staging.iterdir():
            with file.open("rb") as fh:
                os.fsync(fh.fileno())
        final = self.path(name)
        os.replace(staging, final)
        fsync_dir(self.root)
        write_json_atomic(self.current_file, {"version": name})

    def prune(self, keep: int = 2, protect: Collection[str] = ()) -> list[str]:
        """Remove the published versions older than the newest ``keep`` along the published chain (so
        never ``CURRENT``), and any folder off the chain numbered below the oldest one kept — except the
        versions in ``protect`` (those a live replica serves: :mod:`rag.index.replica_leases`). Returns the
        names removed, by number. Folders above ``CURRENT`` are :meth:`discard_unpublished`'s business."""
        if keep < 1:
            raise ValueError(f"keep must be at least 1, got {keep}")
        chain = self.published()
        if not chain:
            return []
        kept = chain[-keep:]
        oldest_kept = version_number(kept[0])
        doomed = [
            n
            for n in self.folders()
            if n not in kept and n not in protect and version_number(n) < oldest_kept
        ]
        for name in doomed:
            shutil.rmtree(self.path(name), ignore_errors=True)
        return doomed


def _segment_version(segment: str) -> str:
    """The version that wrote a segment: ``seg-v000007-0`` → ``v000007``."""
    return segment.split("-")[1]


def _is_version_name(name: str) -> bool:
    return name.startswith(VERSION_PREFIX) and name[1:].isdigit()
