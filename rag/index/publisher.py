"""Publishing a version over segments: what changed is written, the rest is listed (rag.index.segments).

A publish writes, in order: the new chunks as one segment (and, for a collection still in the layout
before segments, its whole table as the first one), a tail merge when :func:`merge_plan` asks for one, then
the version folder (manifest listing the segments, the deletion mask, the points it dropped) under a
staging name, and switches ``CURRENT`` (:meth:`VersionStore.publish`). A crash anywhere before that switch
leaves the previous version serving; what was written is numbered above ``CURRENT`` and removed by the next
ingest. Its cost is the new rows, the mask (N/8 bytes) and the merge, never the whole table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rag.bm25.index import TermMatrix
from rag.index.chunk_table import ChunkRecord
from rag.index.segments import (
    DELETED_FILE,
    REMOVED_FILE,
    VersionView,
    combine_terms,
    merge_plan,
    pack_mask,
    read_vectors,
    segment_chunks,
    segment_name,
    write_segment,
)
from rag.index.versions import VersionStore, write_json_atomic

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Draft:
    """The next version, as the publisher builds it: segments, their row counts and the deletion mask."""

    name: str
    segments: list[str]
    sizes: list[int]
    deleted: np.ndarray
    written: list[str] = field(default_factory=list)

    def add(
        self,
        versions: VersionStore,
        chunks: Sequence[ChunkRecord],
        terms: TermMatrix,
        vectors: np.ndarray | None = None,
    ) -> None:
        seg = segment_name(self.name, len(self.written))
        write_segment(versions.segments_root, seg, chunks, terms, vectors)
        self.written.append(seg)
        self.segments.append(seg)
        self.sizes.append(len(chunks))
        self.deleted = np.concatenate([self.deleted, np.zeros(len(chunks), dtype=bool)])

    def merge_tail(self, versions: VersionStore, count: int) -> None:
        """Rewrite the last ``count`` segments as one, without their deleted rows."""
        start = sum(self.sizes[:-count])
        keep = ~self.deleted[start:]
        tail = self.segments[-count:]
        rows = [c for s in tail for c in segment_chunks(versions, s)]
        chunks = [c for c, k in zip(rows, keep.tolist(), strict=True) if k]
        terms = combine_terms([TermMatrix.load(versions.segments_root / s) for s in tail], keep)
        parts = [read_vectors(versions.segments_root / s) for s in tail]
        vectors = None
        if all(p is not None for p in parts):  # a tail with a segment lacking vectors merges without them
            vectors = np.concatenate([np.asarray(p) for p in parts if p is not None])[keep]
        del self.segments[-count:], self.sizes[-count:]
        self.deleted = self.deleted[:start]
        self.add(versions, chunks, terms, vectors)
        log.info(
            "merged %d segments (%d rows, %d live) into %s", count, len(rows), len(chunks), self.segments[-1]
        )


def publish(
    versions: VersionStore,
    previous: VersionView | None,
    replaced_rows: Sequence[int],
    fresh: Sequence[ChunkRecord],
    fresh_terms: TermMatrix,
    removed_points: Sequence[str],
    manifest: dict[str, Any],
    fresh_vectors: np.ndarray | None = None,
) -> str:
    """Publish ``previous`` minus ``replaced_rows`` plus ``fresh`` (with ``fresh_vectors``, one row each)
    as the next version; returns its name. ``manifest`` holds the fields the ingest records (collection,
    embedder, counts…)."""
    name = versions.next_name()
    if previous is None:
        draft = Draft(name, [], [], np.zeros(0, dtype=bool))
    else:
        deleted = previous.deleted.copy()
        deleted[np.asarray(replaced_rows, dtype=np.int64)] = True
        if previous.legacy is None:
            draft = Draft(name, list(previous.segments), list(previous.sizes), deleted)
        else:  # the whole-table layout: its rows become the first segment
            draft = Draft(name, [], [], np.zeros(0, dtype=bool))
            draft.add(versions, *previous.legacy)
            draft.deleted = deleted
    if fresh:
        draft.add(versions, fresh, fresh_terms, fresh_vectors)
    merge = merge_plan(draft.sizes, int(draft.deleted.sum()))
    if merge:
        draft.merge_tail(versions, merge)
    staging = versions.staging()
    np.save(staging / DELETED_FILE, pack_mask(draft.deleted))
    np.save(staging / REMOVED_FILE, np.asarray([p.encode("ascii") for p in removed_points], dtype="S36"))
    record = {
        **manifest,
        "version": name,
        "parent": previous.name if previous else None,
        "segments": [{"name": s, "rows": n} for s, n in zip(draft.segments, draft.sizes, strict=True)],
        "deleted_rows": int(draft.deleted.sum()),
        "chunks": int((~draft.deleted).sum()),
    }
    write_json_atomic(staging / "manifest.json", record)
    versions.publish(staging, name)
    log.info(
        "published %s (%d docs, %d chunks in %d segments)",
        name,
        record.get("docs", 0),
        record["chunks"],
        len(draft.segments),
    )
    return name
