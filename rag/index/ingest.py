"""Ingestion: documents → chunks → vectors + BM25 term counts in a new segment → a published index version.

The vectors go into the segment (the source every process fills its own vector shard from,
:mod:`rag.index.shard_sync`); after publishing, the ingest brings its own process's shard to the new
version, and every other process does so as it follows the publish."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm import tqdm

from rag.bm25.index import TermMatrix
from rag.dense.embedder import Embedder
from rag.dense.matryoshka import fit_rotation, identity_rotation, rotate
from rag.dense.store import VectorStore
from rag.index.chunk_table import ChunkRecord
from rag.index.given_vectors import check_documents
from rag.index.publisher import publish
from rag.index.replica_leases import ReplicaLeases
from rag.index.segments import VersionView
from rag.index.shard_sync import sync_shard
from rag.index.snapshot import IndexSnapshot
from rag.index.spaces import point_space, rotation_file_of, space_fields, space_of
from rag.index.tuning import MANIFEST_KEY as TUNING_KEY
from rag.index.versions import VersionStore, point_id, write_json_atomic
from rag.tenancy import scoped_id
from rag.text.analyzer import Analyzer
from rag.text.chunking import chunk_document
from rag.types import Document

log = logging.getLogger(__name__)

UPSERT_GROUP = 256  # chunks embedded together (bounds memory, sets progress granularity)
KEEP_VERSIONS = 2  # versions kept on disk: the new one, the one it replaced, and any a live replica serves
LOCK_WAIT_S = 300.0  # an ingest waits this long for another process's ingest to publish (then fails)
ROTATION_SAMPLE = 20_000  # chunks whose embeddings fit the Matryoshka rotation on a collection's first ingest


PENDING_DIR = ".pending-vectors"  # vectors computed by an ingest that has not published yet


class PendingVectors:
    """Vectors an ingest has computed and not yet published, spilled as it goes (one file per group):
    an ingest killed half-way leaves them, and the next one reuses them instead of embedding again. Cleared
    once a version is published."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, point_ids: list[str], vectors: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / f"{uuid.uuid4().hex}.npz"
        tmp = final.with_suffix(".tmp.npz")
        np.savez(tmp, ids=np.asarray([p.encode("ascii") for p in point_ids], dtype="S36"), vectors=vectors)
        os.replace(tmp, final)

    def read(self, wanted: set[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        if not wanted or not self.folder.is_dir():
            return found
        for path in self.folder.glob("*.npz"):
            if path.name.endswith(".tmp.npz"):
                continue
            try:
                with np.load(path) as spill:
                    ids, vectors = spill["ids"], spill["vectors"]
            except (OSError, ValueError, KeyError):
                continue
            for pid, vec in zip(ids.tolist(), vectors, strict=True):
                key = pid.decode("ascii")
                if key in wanted:
                    found[key] = vec
        return found

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


@dataclass(frozen=True, slots=True)
class IngestParams:
    """What an ingest takes from the settings (built by :func:`rag.runtime.ingest_params`): the collection
    and its version folder, the Matryoshka rotation fitted on a first ingest, the chunking (``overlap_words``
    below ``chunk_words``, as the settings validate) and the embedding batch size."""

    collection: str
    versions_dir: Path
    rotation: Literal["pca", "none"]
    chunk_words: int
    chunk_overlap_words: int
    embed_batch_size: int


@dataclass(frozen=True, slots=True)
class IngestReport:
    version: str
    previous_version: str | None
    docs_added: int
    docs_updated: int
    docs_unchanged: int
    docs_deleted: int
    docs_missing_for_delete: int
    chunks_total: int
    chunks_embedded: int  # vectors the embedder computed (and stored)
    seconds: float
    chunks_given: int = 0  # vectors given with the documents (and stored), not embedded here

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class ChangeSet:
    """How an ingest's documents relate to the previous version, by document id."""

    added: frozenset[str]
    updated: frozenset[str]
    unchanged: frozenset[str]
    deleted: frozenset[str]
    missing_for_delete: frozenset[str]

    @property
    def replaced(self) -> frozenset[str]:
        """Documents whose previous rows are dropped (re-written or deleted)."""
        return self.added | self.updated | self.deleted

    @property
    def any_change(self) -> bool:
        return bool(self.added or self.updated or self.deleted)

    def report(
        self, version: str, previous: str | None, chunks: int, embedded: int, started: float, given: int = 0
    ) -> IngestReport:
        return IngestReport(
            version,
            previous,
            len(self.added),
            len(self.updated),
            len(self.unchanged),
            len(self.deleted),
            len(self.missing_for_delete),
            chunks,
            embedded,
            time.perf_counter() - started,
            given,
        )


def diff_documents(
    previous: Iterable[ChunkRecord], incoming: Iterable[ChunkRecord], delete_ids: set[str]
) -> ChangeSet:
    """Compare by the set of point ids (content hashes) of each document's chunks. Documents are known by
    their tenant-scoped ids, and so are ``delete_ids``."""
    before: dict[str, set[str]] = {}
    for rec in previous:
        before.setdefault(rec.doc_key, set()).add(rec.point_id)
    return diff_points(before, incoming, delete_ids)


def diff_points(
    before: Mapping[str, set[str]], incoming: Iterable[ChunkRecord], delete_ids: set[str]
) -> ChangeSet:
    """:func:`diff_documents` given each previous document's point ids (only those of the documents
    ``incoming`` and ``delete_ids`` name are needed)."""
    after: dict[str, set[str]] = {}
    for rec in incoming:
        after.setdefault(rec.doc_key, set()).add(rec.point_id)
    unchanged = {d for d, points in after.items() if before.get(d) == points}
    return ChangeSet(
        added=frozenset(after.keys() - before.keys()),
        updated=frozenset((after.keys() & before.keys()) - unchanged),
        unchanged=frozenset(unchanged),
        deleted=frozenset(delete_ids & before.keys()),
        missing_for_delete=frozenset(delete_ids - before.keys()),
    )


@dataclass(frozen=True, slots=True)
class ReembedReport:
    version: str
    previous_version: str | None
    embedder: str
    from_embedder: str
    chunks: int
    embedded: int  # chunks the new embedder embedded
    reused: int  # chunks whose vectors in the new space were computed before (a staged candidate's)
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _source_rows(source: VersionStore) -> IndexSnapshot:
    """The current version of ``source``: the rows a re-embedding publishes again."""
    rows = IndexSnapshot.load(source)
    if rows is None:
        raise ValueError(f"nothing is published under {source.root}: ingest before re-embedding")
    return rows


def _first_embedder_of(versions: VersionStore) -> str | None:
    meta_file = versions.root / "collection.json"
    return str(json.loads(meta_file.read_text())["embedder"]) if meta_file.exists() else None


class Ingestor:
    """Writes one collection. A new version is published only when its vectors and BM25 files are complete."""

    def __init__(
        self,
        params: IngestParams,
        embedder: Embedder,
        store: VectorStore,
        *,
        progress: bool = True,
        on_progress: Callable[[int, int], None] | None = None,
    ):
        """``on_progress(done, total)`` is called as chunks are embedded and stored (for jobs)."""
        self.params = params
        self.on_progress = on_progress
        self.embedder = embedder
        self.store = store
        self.versions = VersionStore(params.versions_dir)
        self.progress = progress
        self.analyzer = Analyzer()
        self._given: dict[str, np.ndarray] = {}  # point id → given vector, during one ingest
        self._pending = PendingVectors(self.versions.root / PENDING_DIR)

    # -- collection-level state ------------------------------------------------------------------
    def collection(self, *, embedding: bool = True) -> tuple[str, int]:
        """The embedder name and dimension the collection is embedded with: its current version's (a
        re-embedded collection's is not the one it was built with, :mod:`rag.index.spaces`), else
        ``collection.json``'s, or for a new collection the configured embedder's. Raises ``ValueError``
        when the settings disagree. ``embedding=False`` (every chunk comes with its vectors) leaves the
        embedder's dimension unasked when the collection exists, so the model is not loaded for an ingest
        that never embeds."""
        meta_file = self.versions.root / "collection.json"
        if not meta_file.exists():
            return self.embedder.name, self.embedder.dim
        stored = json.loads(meta_file.read_text())
        served = self._current_manifest()
        if served is not None and served.get("embedder"):
            stored = {**stored, "embedder": served["embedder"], "dim": served.get("dim", stored.get("dim"))}
        expected: dict[str, object] = {
            "embedder": self.embedder.name,
            "rotation": self.params.rotation,
            "analyzer": self.analyzer.fingerprint(),
        }
        if embedding:
            expected["dim"] = self.embedder.dim
        for key, value in expected.items():
            if stored.get(key) != value:
                raise ValueError(
                    f"collection {self.params.collection!r} was built with {key}={stored.get(key)!r}, "
                    f"but the settings give {value!r}; use the same setting or another collection"
                )
        return str(stored["embedder"]), int(stored["dim"])

    def check_vectors(self, documents: Iterable[Document], embedding_model: str | None) -> list[Document]:
        """``documents`` with their given vectors checked against the collection (model, dimension, norm,
        one per chunk: :func:`rag.index.given_vectors.check_documents`) and normalised; raises
        :class:`~rag.index.given_vectors.VectorError`. The ingest calls it; the service calls it before
        queueing a job too, so that bad vectors are refused by the request (4xx), not by a failed job."""
        docs = list(documents)
        if all(d.vectors is None for d in docs):
            return docs
        model, dim = self.collection(embedding=any(d.vectors is None for d in docs))
        return check_documents(
            docs,
            model=embedding_model,
            collection_model=model,
            dim=dim,
            chunk_words=self.params.chunk_words,
            overlap_words=self.params.chunk_overlap_words,
        )

    def _current_manifest(self) -> dict[str, Any] | None:
        current = self.versions.current()
        if current is None:
            return None
        manifest: dict[str, Any] = json.loads((self.versions.path(current) / "manifest.json").read_text())
        return manifest

    def _first_embedder(self) -> str:
        """The embedder the collection was built with (its first vector space), or the configured one for
        a collection not built yet."""
        return _first_embedder_of(self.versions) or self.embedder.name

    def _record_collection(self, name: str, dim: int) -> None:
        meta_file = self.versions.root / "collection.json"
        if not meta_file.exists():
            meta = {
                "embedder": name,
                "dim": dim,
                "rotation": self.params.rotation,
                "analyzer": self.analyzer.fingerprint(),
            }
            write_json_atomic(meta_file, meta)

    def _rotation(self, sample: np.ndarray, path: Path) -> np.ndarray:
        """The rotation at ``path`` (its vector space's), fitted on ``sample`` and saved when it is new."""
        if path.exists():
            rotation: np.ndarray = np.load(path)
            return rotation
        if self.params.rotation == "pca" and len(sample):
            rotation = fit_rotation(sample)
        else:
            rotation = identity_rotation(sample.shape[1] if sample.ndim == 2 else self.embedder.dim)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, rotation)
        tmp.replace(path)
        log.info("fitted %s rotation on %d vectors", self.params.rotation, len(sample))
        return rotation

    # -- the ingest --------------------------------------------------------------------------------
    def ingest(
        self,
        documents: Iterable[Document],
        delete_ids: Iterable[str] = (),
        *,
        embedding_model: str | None = None,
    ) -> IngestReport:
        """Upsert ``documents`` and delete ``delete_ids`` (tenant-scoped ids, :func:`rag.tenancy.scoped_id`)
        in one new version. Documents that carry ``vectors`` are stored with them (checked against the
        collection; ``embedding_model`` must name the collection's embedder) and never sent to the
        embedder; the others are embedded."""
        started = time.perf_counter()
        # read (and so validate) every document before touching the collection: bad input writes nothing
        docs = list(documents)
        with self.versions.lock(wait_s=LOCK_WAIT_S):
            docs = self.check_vectors(docs, embedding_model)
            incoming = {doc.key: doc for doc in docs}  # the last occurrence of an id wins
            discarded = self.versions.discard_unpublished()
            if discarded:
                log.warning("removed version folders that were never published: %s", ", ".join(discarded))
            # the embedder is asked its dimension only when something will be embedded (not for a delete)
            embedding = any(d.vectors is None for d in incoming.values())
            name, dim = self.collection(embedding=embedding)
            self._record_collection(name, dim)
            self.store.ensure_collection(dim)
            previous = VersionView.load(self.versions)
            space = point_space(previous.manifest if previous else None)
            self._given = {}
            new_chunks = [rec for doc in incoming.values() for rec in self._chunk_records(doc, space)]
            deletes = set(delete_ids) - set(incoming)
            before = previous.rows_of(sorted(set(incoming) | deletes)) if previous else {}
            changes = diff_points(
                {d: {p for _, p in rows} for d, rows in before.items()}, new_chunks, deletes
            )

            if not changes.any_change and previous is not None:
                log.info("nothing changed; %s keeps serving", previous.name)
                sync_shard(self.store, self.versions, previous)  # e.g. a new, empty shard
                return changes.report(previous.name, previous.name, previous.live_rows, 0, started, 0)

            fresh = [c for c in new_chunks if c.doc_key not in changes.unchanged]
            rotation_path = self.versions.root / rotation_file_of(space)
            fresh_vectors, embedded, given = self._fresh_vectors(fresh, previous, rotation_path)
            replaced = [row for d in changes.replaced for row, _ in before.get(d, [])]
            fresh_points = {c.point_id for c in fresh}
            removed = sorted({p for d in changes.replaced for _, p in before.get(d, [])} - fresh_points)
            docs_before = int(previous.manifest.get("docs", 0)) if previous else 0
            manifest = {
                "created_at": datetime.now(UTC).isoformat(),
                "collection": self.params.collection,
                "embedder": name,
                "dim": dim,
                "rotation": self.params.rotation,
                "analyzer": self.analyzer.fingerprint(),
                # vectors given with this version's new chunks: how many, and the model their sender named
                "given_vectors": {"given": given, "model": embedding_model} if given else None,
                "docs": docs_before + len(changes.added) - len(changes.deleted),
                "chunk_words": self.params.chunk_words,
                "chunk_overlap_words": self.params.chunk_overlap_words,
                # `rag tune`'s choice carries over to the versions after it (rag.index.tuning)
                TUNING_KEY: previous.manifest.get(TUNING_KEY) if previous else None,
                **space_fields(space),  # the vector space stays that of the version before
            }
            terms = TermMatrix.empty().append([self.analyzer.tokens(c.passage) for c in fresh])
            version = publish(
                self.versions,
                previous,
                replaced,
                fresh,
                terms,
                removed,
                manifest,
                fresh_vectors,
                legacy_vectors=self._legacy_vectors(previous),
            )
            self._pending.clear()
            self._given = {}
            self._after_publish(version)
            chunks_total = (previous.live_rows if previous else 0) - len(replaced) + len(fresh)
            return changes.report(
                version, previous.name if previous else None, chunks_total, embedded, started, given
            )

    def retune(self, tuning: dict[str, Any] | None) -> str:
        """Publish the current version's rows again as a new version whose manifest carries ``tuning``
        (:class:`rag.index.tuning.CollectionTuning` as JSON; None removes it). Returns the new version.
        A new version, not an edit: replicas follow it and the cache keys change with it."""
        with self.versions.lock(wait_s=LOCK_WAIT_S):
            self.versions.discard_unpublished()
            previous = VersionView.load(self.versions)
            if previous is None:
                raise ValueError("nothing is published in this collection yet: ingest before tuning")
            self.store.ensure_collection(int(previous.manifest["dim"]))
            carried = {
                k: v
                for k, v in previous.manifest.items()
                if k not in ("version", "parent", "segments", "deleted_rows", "chunks")
            }
            manifest = {**carried, "created_at": datetime.now(UTC).isoformat(), TUNING_KEY: tuning}
            version = publish(
                self.versions,
                previous,
                [],
                [],
                TermMatrix.empty(),
                [],
                manifest,
                legacy_vectors=self._legacy_vectors(previous),
            )
            self._after_publish(version)
            return version

    def reembed(self, source: VersionStore, *, reuse: VersionStore | None = None) -> ReembedReport:
        """Publish the rows of ``source``'s current version as a new version of this collection whose
        vectors come from this ingest's embedder: a new vector space (:mod:`rag.index.spaces`). ``source``
        is this collection's own versions (re-embed in place, or promote a candidate), or the collection a
        candidate is staged from. The text, metadata and BM25 rows are the source's, unchanged. Vectors
        already computed in the new space are reused — this collection's own (a candidate staged again
        after ingests), or ``reuse``'s (the staged candidate being promoted) — and only the rest are
        embedded. Raises ``ValueError`` when nothing would change, nothing is published in ``source``, or
        the new model's dimension differs from the source's (that needs a new collection)."""
        started = time.perf_counter()
        in_place = source.root == self.versions.root
        rows = None if in_place else _source_rows(source)  # another collection's: read without its lock
        first = _first_embedder_of(source) or self._first_embedder()
        space = space_of(self.embedder.name, first)
        with self.versions.lock(wait_s=LOCK_WAIT_S):
            self.versions.discard_unpublished()
            rows = rows or _source_rows(source)  # in place: under the lock, the version it replaces
            previous = VersionView.load(self.versions)
            if in_place and previous is not None and previous.manifest.get("embedder") == self.embedder.name:
                raise ValueError(
                    f"collection {self.params.collection!r} is embedded with {self.embedder.name!r} already"
                )
            dim = int(rows.manifest["dim"])
            if self.embedder.dim != dim:
                raise ValueError(
                    f"embedder {self.embedder.name!r} makes {self.embedder.dim}-dimensional vectors but "
                    f"collection {self.params.collection!r} holds {dim}-dimensional ones; a new dimension "
                    "needs a new collection (rag ingest into another --collection)"
                )
            self._record_collection(first, dim)  # a new candidate's ids are relative to its source's
            self.store.ensure_collection(dim)
            rotation_path = self._space_rotation(space, source, reuse)
            chunks = [
                replace(c, point_id=point_id(c.chunk_key, c.passage, c.metadata, space=space, acl=c.acl))
                for c in rows.chunks
            ]
            reuse_view = VersionView.load(reuse) if reuse is not None else None
            reused_from = (reuse, reuse_view) if reuse is not None and reuse_view is not None else None
            vectors, embedded, _ = self._fresh_vectors(chunks, previous, rotation_path, reused_from)
            carried = {
                k: v
                for k, v in rows.manifest.items()
                if k not in ("version", "parent", "segments", "deleted_rows", "chunks", "given_vectors")
            }
            manifest = {
                **carried,
                "created_at": datetime.now(UTC).isoformat(),
                "collection": self.params.collection,
                "embedder": self.embedder.name,
                "dim": dim,
                **space_fields(space),
                "reembedded": {"from": rows.manifest.get("embedder"), "source": rows.version},
                TUNING_KEY: (previous.manifest if previous else rows.manifest).get(TUNING_KEY),
            }
            replaced = np.flatnonzero(~previous.deleted).tolist() if previous is not None else []
            version = publish(
                self.versions,
                previous,
                replaced,
                chunks,
                rows.terms,
                sorted(previous.live_points()) if previous is not None else [],
                manifest,
                vectors,
                legacy_vectors=self._legacy_vectors(previous),
            )
            self._pending.clear()
            self._after_publish(version)
            return ReembedReport(
                version=version,
                previous_version=previous.name if previous else None,
                embedder=self.embedder.name,
                from_embedder=str(rows.manifest.get("embedder")),
                chunks=len(chunks),
                embedded=embedded,
                reused=len(chunks) - embedded,
                seconds=time.perf_counter() - started,
            )

    def _space_rotation(self, space: str, *others: VersionStore | None) -> Path:
        """This collection's rotation file of ``space``, taken from another collection's folder (the
        source of a staged candidate, or the candidate being promoted) when this one has none yet: vectors
        reused across collections must have gone through the same rotation."""
        path = self.versions.root / rotation_file_of(space)
        if not path.exists():
            for other in others:
                theirs = other.root / rotation_file_of(space) if other is not None else None
                if theirs is not None and theirs.exists():
                    tmp = path.with_suffix(".tmp.npy")
                    shutil.copyfile(theirs, tmp)
                    tmp.replace(path)
                    break
        return path

    def _after_publish(self, version: str) -> None:
        """Prune old versions (never one a live lease names) and their segments, then bring this process's
        own shard to ``version`` (the others sync theirs as they follow), or a shared collection: then no
        point of a version a live replica serves is deleted. Under the versions lock."""
        leased = ReplicaLeases(self.versions.root).versions()
        self.versions.prune(keep=KEEP_VERSIONS, protect=leased)
        self.versions.drop_unreferenced_segments()
        view = VersionView.load(self.versions, version)
        assert view is not None
        sync_shard(self.store, self.versions, view, () if self.store.per_process else leased)

    def _chunk_records(self, doc: Document, space: str) -> list[ChunkRecord]:
        records = [
            ChunkRecord(
                c.chunk_id,
                c.doc_id,
                c.ordinal,
                c.title,
                c.text,
                point_id(scoped_id(c.tenant, c.chunk_id), c.passage, c.metadata, space=space, acl=c.acl),
                c.metadata,
                c.tenant,
                c.acl,
            )
            for c in chunk_document(
                doc, size=self.params.chunk_words, overlap=self.params.chunk_overlap_words
            )
        ]
        if doc.vectors is not None:  # one row per chunk, as check_vectors made sure
            for rec, row in zip(records, doc.vectors.rows, strict=True):
                self._given[rec.point_id] = row
        return records

    def _legacy_vectors(self, previous: VersionView | None) -> np.ndarray | None:
        """For a version in the whole-table layout (converted into the first segment by this publish): its
        rows' vectors as this process's store holds them, or None when it lacks any."""
        if previous is None or previous.legacy is None:
            return None
        ids = [p.decode("ascii") for p in previous.keys[0].point_ids.tolist()]
        stored = self.store.stored_vectors(ids)
        if len(stored) < len(set(ids)):
            return None
        return np.stack([stored[p] for p in ids]) if ids else None

    def _fresh_vectors(
        self,
        chunks: list[ChunkRecord],
        previous: VersionView | None,
        rotation_path: Path,
        reuse: tuple[VersionStore, VersionView] | None = None,
    ) -> tuple[np.ndarray | None, int, int]:
        """The rotated vectors of ``chunks``, one row each (None when there are no chunks): those the
        previous version's segments (or ``reuse``'s: a staged candidate's) already carry, the given ones,
        and the embedder's for the rest (given and computed vectors go through the rotation at
        ``rotation_path``, their space's, alike). Returns them and how many were embedded and how many
        given."""
        if not chunks:
            return None, 0, 0
        wanted = [c.point_id for c in chunks]
        known = previous.vectors_of(self.versions, wanted) if previous else {}
        if reuse is not None:
            known.update(reuse[1].vectors_of(reuse[0], [p for p in wanted if p not in known]))
        known.update(self._pending.read(set(wanted) - known.keys()))  # computed by an ingest that died
        out: np.ndarray | None = None
        for i, c in enumerate(chunks):
            row = known.get(c.point_id)
            if row is not None:
                if out is None:
                    out = np.empty((len(chunks), len(row)), dtype=np.float32)
                out[i] = row
        todo = [i for i, c in enumerate(chunks) if c.point_id not in known]
        rotation = np.load(rotation_path) if rotation_path.exists() else None
        bar = tqdm(total=len(todo), desc="embedding", unit="chunk", disable=not self.progress)
        pending: list[tuple[list[int], np.ndarray]] = []
        done = embedded = 0
        for start in range(0, len(todo), UPSERT_GROUP):
            group = todo[start : start + UPSERT_GROUP]
            vectors, computed = self._vectors([chunks[i] for i in group])
            embedded += computed
            bar.update(len(group))
            pending.append((group, vectors))
            if rotation is None:
                if sum(len(g) for g, _ in pending) < min(ROTATION_SAMPLE, len(todo)):
                    continue
                rotation = self._rotation(np.concatenate([v for _, v in pending]), rotation_path)
            for rows, raw in pending:
                if out is None:
                    out = np.empty((len(chunks), raw.shape[1]), dtype=np.float32)
                out[rows] = rotate(raw, rotation)
                self._pending.write([chunks[i].point_id for i in rows], out[rows])
                done += len(rows)
                log.info("embedded %d/%d chunks", done, len(todo))
                if self.on_progress is not None:
                    self.on_progress(done, len(todo))
            pending = []
        bar.close()
        return out, embedded, done - embedded

    def _vectors(self, group: list[ChunkRecord]) -> tuple[np.ndarray, int]:
        """Unrotated unit vectors of ``group``: the given ones, and the embedder's for the rest (one call,
        none when every vector is given). Returns them and how many were computed."""
        missing = [i for i, c in enumerate(group) if c.point_id not in self._given]
        if not missing:
            return np.stack([self._given[c.point_id] for c in group]), 0
        computed = self.embedder.embed(
            [group[i].passage for i in missing], batch_size=self.params.embed_batch_size
        )
        if len(missing) == len(group):
            return computed, len(missing)
        vectors = np.empty((len(group), computed.shape[1]), dtype=np.float32)
        vectors[missing] = computed
        for i, c in enumerate(group):
            row = self._given.get(c.point_id)
            if row is not None:
                vectors[i] = row
        return vectors, len(missing)
