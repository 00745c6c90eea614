"""Immutable segments of the chunk table and BM25 term counts, shared by the versions that use them.

A version is a list of segments plus a deletion mask over their rows (``deleted.npy``, bit-packed), so a
publish writes what changed: one segment of the new chunks, the mask (N/8 bytes) and the manifest. The
rows of a version are the segments' rows in order minus the deleted ones — the order in which the old
whole-table layout kept them (kept rows, then the new ones), so a version reads identically either way.

A segment folder (``<versions>/segments/seg-v000007-0``) holds::

    chunks.jsonl      the chunk records, one per row (:class:`~rag.index.snapshot.ChunkRecord`)
    bm25_tf.npz       term counts of those rows over the segment's own vocabulary (a TermMatrix)
    bm25_vocab.json   that vocabulary (loading maps it onto the version's; see :func:`combine_terms`)
    keys.npz          per row the document key and point id, and the rows sorted by document key: the
                      index an ingest needs (which rows a document has, which points they are) without
                      reading the chunk text
    vectors.npy       per row the rotated, normalised full vector (float32): what a process fills its own
                      vector shard from (:mod:`rag.index.shard_sync`); absent in segments written before
                      vectors were kept here

It is written under a staging name, fsynced and renamed into place, and never changed; segments named
after a version that was never published are removed with it (:mod:`rag.index.versions`).

Merging (:func:`merge_plan`): consecutive tail segments are merged into one, without their deleted rows,
while the one before the last is no larger than ``MERGE_RATIO`` × the last, so a run of small updates
keeps O(log N) segments and each row is rewritten O(log N) times (Lucene's tiered idea, simplified).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from rag.bm25.index import TermMatrix
from rag.index.chunk_table import ChunkRecord, read_chunks, write_chunks
from rag.index.versions import VersionStore, fsync_dir

MERGE_RATIO = 2  # merge the last two segments while the one before the last is at most this × the last
COMPACT_FRACTION = 0.25  # rewrite every segment once this share of their rows is deleted (an O(N) publish)


def segment_name(version: str, k: int) -> str:
    return f"seg-{version}-{k}"


@dataclass(frozen=True, slots=True)
class SegmentKeys:
    """Per row of a segment: document key and point id (bytes), and the rows in document-key order."""

    doc_keys: np.ndarray
    point_ids: np.ndarray
    order: np.ndarray

    @classmethod
    def of(cls, chunks: Sequence[ChunkRecord]) -> SegmentKeys:
        doc_keys = np.asarray([c.doc_key.encode("utf-8") for c in chunks], dtype=bytes)
        point_ids = np.asarray([c.point_id.encode("ascii") for c in chunks], dtype=bytes)
        if not chunks:
            doc_keys, point_ids = np.empty(0, dtype="S1"), np.empty(0, dtype="S36")
        return cls(doc_keys, point_ids, np.argsort(doc_keys, kind="stable"))

    def rows_of(self, doc_keys: Sequence[str]) -> dict[str, np.ndarray]:
        """The rows (ascending) of each of ``doc_keys`` that this segment has: O(k log n)."""
        if not doc_keys or not len(self.doc_keys):
            return {}
        wanted = np.asarray([k.encode("utf-8") for k in doc_keys], dtype=bytes)
        sorted_keys = self.doc_keys[self.order]
        lo = np.searchsorted(sorted_keys, wanted, side="left")
        hi = np.searchsorted(sorted_keys, wanted, side="right")
        return {
            key: np.sort(self.order[a:b])
            for key, a, b in zip(doc_keys, lo.tolist(), hi.tolist(), strict=True)
            if b > a
        }

    def __len__(self) -> int:
        return len(self.doc_keys)


VECTORS_FILE = "vectors.npy"


def write_segment(
    root: Path,
    name: str,
    chunks: Sequence[ChunkRecord],
    terms: TermMatrix,
    vectors: np.ndarray | None = None,
) -> Path:
    """Write a complete segment under a staging name, fsync it, rename it to ``root/name``. ``vectors``:
    one row per chunk (None: a segment without them, as written before they were kept)."""
    if terms.tf.shape[0] != len(chunks):
        raise ValueError(f"segment {name}: {len(chunks)} chunks but {terms.tf.shape[0]} BM25 rows")
    if vectors is not None and len(vectors) != len(chunks):
        raise ValueError(f"segment {name}: {len(chunks)} chunks but {len(vectors)} vectors")
    root.mkdir(parents=True, exist_ok=True)
    staging = root / f".staging-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    write_chunks(staging / "chunks.jsonl", chunks)
    terms.save(staging)
    keys = SegmentKeys.of(chunks)
    np.savez(staging / "keys.npz", doc_keys=keys.doc_keys, point_ids=keys.point_ids, order=keys.order)
    if vectors is not None:
        np.save(staging / VECTORS_FILE, np.ascontiguousarray(vectors, dtype=np.float32))
    for file in staging.iterdir():
        with file.open("rb") as fh:
            os.fsync(fh.fileno())
    fsync_dir(staging)
    final = root / name
    os.replace(staging, final)
    fsync_dir(root)
    return final


def read_vectors(folder: Path) -> np.ndarray | None:
    """A segment's vectors, memory-mapped (read-only), or None for a segment written without them."""
    path = folder / VECTORS_FILE
    if not path.exists():
        return None
    vectors: np.ndarray = np.load(path, mmap_mode="r")
    return vectors


def write_vectors(folder: Path, vectors: np.ndarray) -> None:
    """Add the vectors file to an existing segment (an upgrade: segments written before they carried
    vectors), atomically: a reader sees no file or the whole one."""
    tmp = folder / f".{VECTORS_FILE}.{uuid.uuid4().hex[:8]}.tmp"
    with tmp.open("wb") as fh:
        np.save(fh, np.ascontiguousarray(vectors, dtype=np.float32))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / VECTORS_FILE)
    fsync_dir(folder)


def read_keys(folder: Path) -> SegmentKeys:
    with np.load(folder / "keys.npz") as arrays:
        return SegmentKeys(arrays["doc_keys"], arrays["point_ids"], arrays["order"])


def combine_terms(parts: Sequence[TermMatrix], keep: np.ndarray | None = None) -> TermMatrix:
    """The parts' rows stacked over one vocabulary (terms in first-seen order across the parts, as
    :meth:`TermMatrix.append` would have numbered them), keeping the rows where ``keep`` is true."""
    vocab: list[str] = []
    term_ids: dict[str, int] = {}
    blocks = []
    for part in parts:
        mapping = np.empty(len(part.vocab), dtype=np.int32)
        for i, term in enumerate(part.vocab):
            tid = term_ids.get(term)
            if tid is None:
                tid = term_ids[term] = len(vocab)
                vocab.append(term)
            mapping[i] = tid
        blocks.append((part.tf, mapping))
    rows = []
    for tf, mapping in blocks:
        remapped = sp.csr_matrix(
            (tf.data, mapping[tf.indices] if len(mapping) else tf.indices, tf.indptr),
            shape=(tf.shape[0], len(vocab)),
        )
        rows.append(remapped)
    if not rows:
        return TermMatrix.empty()
    tf = sp.vstack(rows, format="csr") if len(rows) > 1 else rows[0]
    if keep is not None and not keep.all():
        tf = tf[np.flatnonzero(keep)]
    return TermMatrix(sp.csr_matrix(tf, dtype=np.int32), vocab)


def merge_plan(sizes: Sequence[int], deleted: int = 0) -> int:
    """How many tail segments to merge into one after a publish (0 or 1: none), given each segment's
    row count in order: the last two while the one before the last is at most ``MERGE_RATIO`` × the last,
    and so on down the tail; all of them once ``deleted`` rows exceed ``COMPACT_FRACTION`` of the rows
    (deletes alone never add a segment, so without this their rows would stay in the base forever)."""
    if sizes and deleted > COMPACT_FRACTION * sum(sizes):
        return len(sizes)
    if len(sizes) < 2:
        return 0
    k, tail = 1, sizes[-1]
    while k < len(sizes) and sizes[-k - 1] <= MERGE_RATIO * tail:
        tail += sizes[-k - 1]
        k += 1
    return k if k > 1 else 0


def pack_mask(mask: np.ndarray) -> np.ndarray:
    return np.packbits(mask.astype(bool))


def unpack_mask(packed: np.ndarray, rows: int) -> np.ndarray:
    return np.unpackbits(packed, count=rows).astype(bool)


# -- a version over segments --------------------------------------------------------------------------
DELETED_FILE = "deleted.npy"  # bit-packed mask over the rows of the version's segments: rows it drops
REMOVED_FILE = "removed.npy"  # point ids the version dropped (live in its parent, not in it)

_chunk_cache: dict[Path, dict[str, list[ChunkRecord]]] = {}  # per versions root: segment → its chunks
CACHED_ROOTS = 4  # collections whose last loaded version's segments stay parsed


def segment_chunks(versions: VersionStore, name: str) -> list[ChunkRecord]:
    """A segment's chunk records, parsed once per process while the versions that list it are loaded
    (segments never change, so a reload after a publish parses only the new ones)."""
    cached = _chunk_cache.get(versions.root, {})
    chunks = cached.get(name)
    if chunks is None:
        chunks = read_chunks(versions.segments_root / name / "chunks.jsonl")
    return chunks


def load_rows(
    versions: VersionStore, name: str, manifest: dict[str, Any]
) -> tuple[list[ChunkRecord], TermMatrix]:
    """The chunk records and term counts of version ``name``: its segments' rows, in order, without the
    deleted ones."""
    segments = [str(s["name"]) for s in manifest["segments"]]
    parts = {s: segment_chunks(versions, s) for s in segments}
    _chunk_cache.pop(versions.root, None)
    _chunk_cache[versions.root] = parts  # keep what this version lists, forget the rest
    while len(_chunk_cache) > CACHED_ROOTS:
        del _chunk_cache[next(iter(_chunk_cache))]
    total = sum(len(c) for c in parts.values())
    keep = ~read_mask(versions.path(name), total)
    rows = [c for s in segments for c in parts[s]]
    chunks = rows if keep.all() else [c for c, k in zip(rows, keep.tolist(), strict=True) if k]
    terms = combine_terms([TermMatrix.load(versions.segments_root / s) for s in segments], keep)
    return chunks, terms


def load_vectors(versions: VersionStore, name: str, manifest: dict[str, Any]) -> np.ndarray | None:
    """The stored (rotated) vectors of version ``name``, one row per chunk in :func:`load_rows` order; None
    when a segment carries none (written before segments held vectors; the next ingest backfills them)."""
    if "segments" not in manifest:
        return None
    parts = [read_vectors(versions.segments_root / str(s["name"])) for s in manifest["segments"]]
    if any(p is None for p in parts):
        return None
    vectors = np.concatenate([np.asarray(p, dtype=np.float32) for p in parts if p is not None])
    keep = ~read_mask(versions.path(name), len(vectors))
    return vectors if keep.all() else vectors[keep]


def read_mask(folder: Path, rows: int) -> np.ndarray:
    path = folder / DELETED_FILE
    if not path.exists():
        return np.zeros(rows, dtype=bool)
    return unpack_mask(np.load(path), rows)


@dataclass(slots=True)
class VersionView:
    """What an ingest needs of a published version, without its chunk text: its segments, their keys and
    its deletion mask (rows numbered across the segments in order). A version written before segments
    (``legacy``) is read whole once; the next publish writes it as its first segment."""

    name: str
    manifest: dict[str, Any]
    segments: list[str]
    sizes: list[int]
    keys: list[SegmentKeys]
    deleted: np.ndarray
    legacy: tuple[list[ChunkRecord], TermMatrix] | None = None

    @classmethod
    def load(cls, versions: VersionStore, name: str | None = None) -> VersionView | None:
        name = name or versions.current()
        if name is None:
            return None
        folder = versions.path(name)
        manifest: dict[str, Any] = json.loads((folder / "manifest.json").read_text())
        if "segments" not in manifest:
            chunks = read_chunks(folder / "chunks.jsonl")
            return cls(
                name,
                manifest,
                [],
                [len(chunks)],
                [SegmentKeys.of(chunks)],
                np.zeros(len(chunks), dtype=bool),
                (chunks, TermMatrix.load(folder)),
            )
        segments = [str(s["name"]) for s in manifest["segments"]]
        sizes = [int(s["rows"]) for s in manifest["segments"]]
        keys = [read_keys(versions.segments_root / s) for s in segments]
        return cls(name, manifest, segments, sizes, keys, read_mask(folder, sum(sizes)))

    @property
    def offsets(self) -> list[int]:
        out, at = [], 0
        for size in self.sizes:
            out.append(at)
            at += size
        return out

    @property
    def live_rows(self) -> int:
        return int((~self.deleted).sum())

    def rows_of(self, doc_keys: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
        """Each document's live rows (numbered across the segments) with their point ids."""
        found: dict[str, list[tuple[int, str]]] = {}
        for start, keys in zip(self.offsets, self.keys, strict=True):
            for doc, rows in keys.rows_of(doc_keys).items():
                for row in rows.tolist():
                    if not self.deleted[start + row]:
                        found.setdefault(doc, []).append((start + row, keys.point_ids[row].decode("ascii")))
        return found

    def live_points(self) -> set[str]:
        return {p.decode("ascii") for p in self.live_point_array().tolist()}

    def live_point_array(self) -> np.ndarray:
        """The live rows' point ids (bytes), sorted and unique: for set arithmetic in numpy."""
        parts = [
            keys.point_ids[~self.deleted[start : start + len(keys)]]
            for start, keys in zip(self.offsets, self.keys, strict=True)
        ]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype="S36")

    def vectors_of(self, versions: VersionStore, point_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors of those of ``point_ids`` that this version's segments carry (live or
        deleted rows alike: a point dropped and added back keeps its vector)."""
        if not point_ids or not self.segments:
            return {}
        wanted = np.asarray([p.encode("ascii") for p in point_ids], dtype="S36")
        found: dict[str, np.ndarray] = {}
        for seg, keys in zip(self.segments, self.keys, strict=True):
            rows = np.flatnonzero(np.isin(keys.point_ids, wanted))
            if not len(rows):
                continue
            vectors = read_vectors(versions.segments_root / seg)
            if vectors is None:
                continue
            block = np.asarray(vectors[rows], dtype=np.float32)
            for pid, vec in zip(keys.point_ids[rows].tolist(), block, strict=True):
                found[pid.decode("ascii")] = vec
        return found

    def lacking_vectors(self, versions: VersionStore) -> list[str]:
        """Its segments written before segments carried vectors."""
        return [s for s in self.segments if not (versions.segments_root / s / VECTORS_FILE).exists()]

    def removed_points(self, versions: VersionStore) -> np.ndarray | None:
        """The point ids this version dropped (None for a version that did not record them)."""
        path = versions.path(self.name) / REMOVED_FILE
        return np.load(path) if path.exists() else None
