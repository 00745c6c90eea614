"""A loaded, immutable index version: chunk table, BM25 term matrix, rotation and manifest."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Hashable
from functools import cached_property
from typing import Any, TypeVar, cast

import numpy as np

from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.bm25.scoring import idf_lucene
from rag.fusion import FusionChoice
from rag.index.calibration import ScoreCalibration
from rag.index.chunk_table import ChunkRecord, read_chunks, write_chunks
from rag.index.segments import load_rows
from rag.index.spaces import rotation_file
from rag.index.tuning import CollectionTuning, read_tuning
from rag.index.versions import VersionStore
from rag.text.analyzer import Analyzer

__all__ = ["ChunkRecord", "IndexSnapshot", "read_chunks", "write_chunks"]

T = TypeVar("T")


class IndexSnapshot:
    """Everything a query needs from one published version. Rows of the term matrix = ``chunks`` order."""

    def __init__(
        self,
        version: str,
        manifest: dict[str, Any],
        chunks: list[ChunkRecord],
        terms: TermMatrix,
        rotation: np.ndarray | None,
        analyzer: Analyzer,
        bm25_params: BM25Params | None = None,
    ) -> None:
        if terms.tf.shape[0] != len(chunks):
            raise ValueError(f"version {version}: {len(chunks)} chunks but {terms.tf.shape[0]} BM25 rows")
        self.version = version
        self.manifest = manifest
        self.chunks = chunks
        self.terms = terms
        self.rotation = rotation
        self.analyzer = analyzer
        # `rag tune`'s record for the collection, if this version carries one: its BM25 parameters win
        # over the configured ones (``bm25_params``), and plans take its fusion (rag.retrieval.plan)
        self.tuning: CollectionTuning | None = read_tuning(manifest)
        self.bm25_params = self.tuning.bm25 if self.tuning else (bm25_params or BM25Params())
        # documents and chunks are keyed by their tenant-scoped ids (rag.tenancy)
        self.doc_ids: list[str] = list(dict.fromkeys(c.doc_key for c in chunks))
        doc_index = {d: i for i, d in enumerate(self.doc_ids)}
        self.chunk_doc = np.fromiter(
            (doc_index[c.doc_key] for c in chunks), dtype=np.int64, count=len(chunks)
        )
        self.point_rows = {c.point_id: i for i, c in enumerate(chunks)}
        self.chunk_rows = {c.chunk_key: i for i, c in enumerate(chunks)}
        self._tenant_rows: dict[str, np.ndarray] = {}
        # tenants with a chunk that has an ACL (rag.acl): a query of any other tenant under the `public`
        # default sees what it saw before ACLs, and costs what it did (rag.retrieval.filters.SearchFilter)
        self.acl_tenants: frozenset[str] = frozenset(c.tenant for c in chunks if c.acl)
        self._derived: dict[Hashable, Any] = {}
        self._derived_lock = threading.Lock()

    @classmethod
    def empty(cls, analyzer: Analyzer) -> IndexSnapshot:
        return cls("", {}, [], TermMatrix.empty(), None, analyzer)

    @classmethod
    def load(
        cls, store: VersionStore, version: str | None = None, bm25_params: BM25Params | None = None
    ) -> IndexSnapshot | None:
        """The given (default: current) version, or None when nothing has been published."""
        name = version or store.current()
        if name is None:
            return None
        folder = store.path(name)
        manifest = json.loads((folder / "manifest.json").read_text())
        analyzer = Analyzer()
        if manifest.get("analyzer", analyzer.fingerprint()) != analyzer.fingerprint():
            raise ValueError(
                f"version {name} was analysed with {manifest['analyzer']!r} but this code analyses with "
                f"{analyzer.fingerprint()!r}; re-ingest into a new collection"
            )
        rotation_path = store.root / rotation_file(manifest)  # its vector space's (rag.index.spaces)
        rotation = np.load(rotation_path) if rotation_path.exists() else None
        if "segments" in manifest:  # rag.index.segments: shared segments minus this version's deletions
            chunks, terms = load_rows(store, name, manifest)
        else:  # written before segments: the whole table in the version's folder
            chunks, terms = read_chunks(folder / "chunks.jsonl"), TermMatrix.load(folder)
        return cls(name, manifest, chunks, terms, rotation, analyzer, bm25_params)

    @property
    def tuned_fusion(self) -> FusionChoice | None:
        """The fusion ``rag tune`` chose for this collection (None: plans take the configured one)."""
        return self.tuning.fusion if self.tuning else None

    @property
    def calibration(self) -> ScoreCalibration | None:
        """The confidence scale fitted with ``rag tune`` for this collection (None: uncalibrated, or
        fitted on another embedder's cosines: a re-embedded version carries the tuning, not the scale)."""
        calibration = self.tuning.calibration if self.tuning else None
        if calibration is None or not calibration.applies_to(self.manifest.get("embedder")):
            return None
        return calibration

    @cached_property
    def bm25(self) -> BM25Index:
        return BM25Index(self.terms, self.analyzer, self.bm25_params)

    @cached_property
    def _document_frequency(self) -> np.ndarray:
        return np.asarray((self.terms.tf > 0).sum(axis=0)).ravel()

    def idf(self, term: str) -> float | None:
        """Lucene-style IDF of an analysed term over this version's chunks; None for an unknown term."""
        term_id = self.terms.term_ids.get(term)
        if term_id is None:
            return None
        return float(idf_lucene(self._document_frequency[term_id : term_id + 1], self.terms.tf.shape[0])[0])

    def chunk(self, chunk_key: str) -> ChunkRecord:
        """The chunk with this tenant-scoped id (a :class:`~rag.types.Hit`'s ``chunk_id``)."""
        return self.chunks[self.chunk_rows[chunk_key]]

    @property
    def tenants(self) -> set[str]:
        return {c.tenant for c in self.chunks}

    def tenant_rows(self, tenant: str) -> np.ndarray:
        """Boolean mask of the rows (chunks) of ``tenant``; computed once per tenant and version."""
        mask = self._tenant_rows.get(tenant)
        if mask is None:
            mask = np.fromiter((c.tenant == tenant for c in self.chunks), dtype=bool, count=len(self.chunks))
            self._tenant_rows[tenant] = mask
        return mask

    def derived(self, key: Hashable, build: Callable[[], T]) -> T:
        """A value computed from this (immutable) version on first use and kept with it, e.g. the row
        index of a metadata field (:mod:`rag.retrieval.filters`). Built once even when threads ask at
        once; the caller bounds the keys (each one lives as long as the version)."""
        try:
            return cast(T, self._derived[key])
        except KeyError:
            pass
        with self._derived_lock:
            if key not in self._derived:
                self._derived[key] = build()
            return cast(T, self._derived[key])

    def derived_keys(self) -> set[Hashable]:
        return set(self._derived)

    @cached_property
    def first_chunks(self) -> dict[str, ChunkRecord]:
        """Each document's first chunk (its title and opening text)."""
        first: dict[str, ChunkRecord] = {}
        for chunk in self.chunks:
            first.setdefault(chunk.doc_key, chunk)
        return first

    @property
    def n_docs(self) -> int:
        return len(self.doc_ids)
