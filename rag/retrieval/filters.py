"""Search filters: the caller's tenant plus equality filters on document metadata.

One filter is applied twice, consistently: as a boolean row mask over the snapshot's chunks (BM25, and a
check on every dense hit) and as a Qdrant payload filter (so the vector search itself only returns
matching points). The snapshot check is what guarantees isolation; the Qdrant filter is what keeps the
dense candidate list full.

The row mask reads inverted indexes, not chunks: per (version, metadata field), typed value -> rows
(:class:`FieldIndex`), built on the field's first use by one pass over the chunks and kept with the
snapshot. A filtered query then costs the rows of the values it names plus one boolean AND per field and
for the tenant, whatever the tenant's chunk count. :class:`LazyRowMask` computes the mask in the thread
of the first retrieval step that needs it, so neither the build nor the AND runs on the event loop.

Memory of the field indexes: 4 bytes per chunk that has a filterable value for the field, plus about
100 bytes per distinct value (its dict entry; the value object is shared with the chunk's metadata;
measured: 200k distinct URLs, 16.5 MB), so a field index is smaller than the metadata it indexes, which
the snapshot holds anyway (the ingest API takes at most ``api.schemas.MAX_METADATA_FIELDS`` fields per
document). No cap on distinct values is needed for that bound, and none is applied: a filter on a
high-cardinality field (a URL, an id) answers exactly, as a user expects. Only the field names present
in the version get an index; a field no chunk has matches nothing without one, so names a client makes
up cost neither a pass nor memory.

Document ACLs (:mod:`rag.acl`) are one more part of the filter, :attr:`SearchFilter.access`, applied the
same two ways: in the row mask (every retriever's rows, PRF feedback included, and the check of every dense
and sparse hit) and as a Qdrant payload condition on ``acl``. The ACL index (:class:`AclIndex`, one per
version: entry -> rows, plus the rows with no ACL) makes a caller's mask the union of its entries' rows;
it costs 4 bytes per (chunk, ACL entry), at most ``rag.acl.MAX_ACL_ENTRIES`` per chunk, plus one byte
per chunk for the unlisted rows; a caller's mask is built per query (no per-caller state to bound).
:meth:`SearchFilter.within` drops the scope where it hides nothing (the tenant has no ACL'd chunk in this
version and its default is ``public``): such a query runs, and is cached, exactly as before ACLs.
:func:`visible` is the last check, on every answer served under a scope.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from rag.acl import AccessScope, AclDefault
from rag.errors import RagError
from rag.index.snapshot import ChunkRecord, IndexSnapshot
from rag.tenancy import scoped_id
from rag.types import Result

Scalar = str | int | bool
MAX_FILTER_FIELDS = 8
MAX_FILTER_VALUES = 64
MAX_FILTER_STRING = 256
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
_FIELD_RE = re.compile(FIELD_PATTERN)


class FilterError(RagError, ValueError):
    """A filter of the wrong shape; ``field`` names the offending part (e.g. ``filters.lang``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


def _typed(value: Any, field: str) -> tuple[str, Scalar]:
    # (kind, value): keeps True apart from 1, as the Qdrant payload match does
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, int):
        return ("int", value)
    if isinstance(value, str):
        if len(value) > MAX_FILTER_STRING:
            raise FilterError(field, f"string values have at most {MAX_FILTER_STRING} characters")
        return ("str", value)
    raise FilterError(field, f"values must be strings, integers or booleans, got {type(value).__name__}")


@dataclass(frozen=True, slots=True)
class SearchFilter:
    """``tenant=None`` searches every tenant (the CLI and evaluation); ``fields`` are ANDed, the values of
    one field ORed."""

    tenant: str | None = None
    fields: tuple[tuple[str, frozenset[tuple[str, Scalar]]], ...] = ()
    access: AccessScope | None = None  # document ACLs (rag.acl); None: no ACL check (CLI, evaluation)

    @classmethod
    def of(
        cls,
        tenant: str | None,
        filters: Mapping[str, Any] | None = None,
        *,
        access: AccessScope | None = None,
    ) -> SearchFilter:
        """Validate a ``{field: value | [values]}`` mapping (raises :class:`FilterError`)."""
        filters = filters or {}
        if not isinstance(filters, Mapping):
            raise FilterError("filters", "must be an object of metadata field -> value or list of values")
        if len(filters) > MAX_FILTER_FIELDS:
            raise FilterError("filters", f"at most {MAX_FILTER_FIELDS} fields, got {len(filters)}")
        fields = []
        for key, raw in sorted(filters.items()):
            where = f"filters.{key}"
            if not isinstance(key, str) or not _FIELD_RE.fullmatch(key):
                raise FilterError(where, f"field names must match {FIELD_PATTERN}")
            values: Sequence[Any] = raw if isinstance(raw, list | tuple) else [raw]
            if not values:
                raise FilterError(where, "an empty list matches nothing; leave the field out instead")
            if len(values) > MAX_FILTER_VALUES:
                raise FilterError(where, f"at most {MAX_FILTER_VALUES} values, got {len(values)}")
            fields.append((key, frozenset(_typed(v, where) for v in values)))
        return cls(tenant, tuple(fields), access)

    @property
    def is_empty(self) -> bool:
        return self.tenant is None and not self.fields and self.access is None

    def within(self, snapshot: IndexSnapshot) -> SearchFilter:
        """This filter for ``snapshot``'s version: without its access scope when the scope hides nothing
        there (no chunk of the tenant has an ACL and unlisted documents are public), so such a query costs
        and caches as before ACLs. Kept otherwise: under ``deny`` an unlisted document is hidden too."""
        scope = self.access
        if scope is None or scope.unlisted is not AclDefault.PUBLIC:
            return self
        if self.tenant is None and snapshot.acl_tenants:
            return self
        if self.tenant is not None and self.tenant in snapshot.acl_tenants:
            return self
        return SearchFilter(self.tenant, self.fields, None)

    def matches(self, chunk: ChunkRecord) -> bool:
        if self.tenant is not None and chunk.tenant != self.tenant:
            return False
        if self.access is not None and not self.access.allows(chunk.acl):
            return False
        for key, allowed in self.fields:
            if key not in chunk.metadata:
                return False
            try:
                if _typed(chunk.metadata[key], key) not in allowed:
                    return False
            except FilterError:  # a list or object in the metadata never equals a scalar
                return False
        return True


_NO_ROWS = np.zeros(0, dtype=np.int32)


@dataclass(frozen=True, slots=True)
class FieldIndex:
    """One metadata field over a version's rows: typed value -> its rows, ascending (CSR layout:
    the rows of value ``ids[v]`` are ``rows[starts[i]:starts[i + 1]]``). Only values a filter can equal
    are indexed, typed as :meth:`SearchFilter.matches` types them; a list, object, float or null, or a
    string past ``MAX_FILTER_STRING``, matches no filter and is left out."""

    ids: dict[str, dict[Scalar, int]]  # kind ("str", "int", "bool") -> value -> value id
    rows: np.ndarray  # int32
    starts: np.ndarray  # int64, one more than there are values

    @classmethod
    def build(cls, chunks: Sequence[ChunkRecord], field: str) -> FieldIndex:
        """One pass over ``chunks``."""
        ids: dict[str, dict[Scalar, int]] = {"str": {}, "int": {}, "bool": {}}  # no tuple per value
        rows: list[int] = []
        value_ids: list[int] = []
        n_values = 0
        for row, chunk in enumerate(chunks):
            if field not in chunk.metadata:
                continue
            try:
                kind, value = _typed(chunk.metadata[field], field)
            except FilterError:
                continue
            of_kind = ids[kind]
            value_id = of_kind.get(value)
            if value_id is None:
                value_id = of_kind[value] = n_values
                n_values += 1
            rows.append(row)
            value_ids.append(value_id)
        by_value = np.asarray(value_ids, dtype=np.int32)
        order = np.argsort(by_value, kind="stable")  # rows stay ascending within a value
        starts = np.zeros(n_values + 1, dtype=np.int64)
        np.cumsum(np.bincount(by_value, minlength=n_values), out=starts[1:])
        return cls(ids, np.asarray(rows, dtype=np.int32)[order], starts)

    def rows_of(self, value: tuple[str, Scalar]) -> np.ndarray:
        kind, scalar = value
        i = self.ids[kind].get(scalar)
        return _NO_ROWS if i is None else self.rows[self.starts[i] : self.starts[i + 1]]

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.starts.nbytes)


def _field_names(snapshot: IndexSnapshot) -> frozenset[str]:
    return snapshot.derived(
        ("metadata-fields",), lambda: frozenset(k for c in snapshot.chunks for k in c.metadata)
    )


def field_index(snapshot: IndexSnapshot, field: str) -> FieldIndex | None:
    """The index of ``field`` in this version (built on first use); None when no chunk has the field."""
    if field not in _field_names(snapshot):
        return None
    return snapshot.derived(("metadata", field), lambda: FieldIndex.build(snapshot.chunks, field))


def indexed_fields(snapshot: IndexSnapshot) -> set[str]:
    """The fields of this version that have an index so far."""
    return {key[1] for key in snapshot.derived_keys() if isinstance(key, tuple) and key[0] == "metadata"}


@dataclass(frozen=True, slots=True)
class AclIndex:
    """A version's document ACLs over its rows: entry -> rows (CSR, as :class:`FieldIndex`), and the
    rows with no ACL."""

    ids: dict[str, int]  # entry -> entry id
    rows: np.ndarray  # int32, ascending within an entry
    starts: np.ndarray  # int64, one more than there are entries
    unlisted: np.ndarray  # bool per row: the chunk has no ACL

    @classmethod
    def build(cls, chunks: Sequence[ChunkRecord]) -> AclIndex:
        """One pass over ``chunks``."""
        ids: dict[str, int] = {}
        rows: list[int] = []
        entry_ids: list[int] = []
        unlisted = np.ones(len(chunks), dtype=bool)
        for row, chunk in enumerate(chunks):
            if not chunk.acl:
                continue
            unlisted[row] = False
            for entry in chunk.acl:
                entry_id = ids.setdefault(entry, len(ids))
                rows.append(row)
                entry_ids.append(entry_id)
        by_entry = np.asarray(entry_ids, dtype=np.int32)
        order = np.argsort(by_entry, kind="stable")
        starts = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(np.bincount(by_entry, minlength=len(ids)), out=starts[1:])
        return cls(ids, np.asarray(rows, dtype=np.int32)[order], starts, unlisted)

    def mask(self, scope: AccessScope) -> np.ndarray:
        """The rows ``scope`` may see (a new array): :meth:`rag.acl.AccessScope.allows`, row by row."""
        visible = (
            self.unlisted.copy() if scope.unlisted is AclDefault.PUBLIC else np.zeros_like(self.unlisted)
        )
        for entry in scope.entries:
            i = self.ids.get(entry)
            if i is not None:
                visible[self.rows[self.starts[i] : self.starts[i + 1]]] = True
        return visible

    @property
    def nbytes(self) -> int:
        return int(self.rows.nbytes + self.starts.nbytes + self.unlisted.nbytes)


def acl_index(snapshot: IndexSnapshot) -> AclIndex:
    """The ACL index of this version (built on first use, one per version)."""
    return snapshot.derived(("acl",), lambda: AclIndex.build(snapshot.chunks))


def row_mask(snapshot: IndexSnapshot, flt: SearchFilter) -> np.ndarray | None:
    """Boolean mask of the snapshot rows that pass ``flt``; None when the filter lets everything through.
    Reads the tenant's rows, the field indexes and the ACL index, never the chunks (after each index's
    first build). The returned array may be shared (the tenant's cached rows): callers must not write to
    it."""
    if flt.is_empty:
        return None
    n = len(snapshot.chunks)
    mask = snapshot.tenant_rows(flt.tenant) if flt.tenant is not None else None
    if flt.access is not None:
        visible = acl_index(snapshot).mask(flt.access)
        mask = visible if mask is None else mask & visible
    for key, allowed in flt.fields:
        index = field_index(snapshot, key)
        passing = np.zeros(n, dtype=bool)
        if index is not None:
            for value in allowed:
                passing[index.rows_of(value)] = True
        mask = passing if mask is None else mask & passing
    return mask if mask is not None else np.ones(n, dtype=bool)


class LazyRowMask:
    """``row_mask(snapshot, flt)``, computed once, on first use, in the thread that first needs it: the
    pipeline's retrieval steps run in worker threads, so the mask (and a field index's first build) stay
    off the event loop. Thread-safe: concurrent steps wait for the one computation."""

    def __init__(self, snapshot: IndexSnapshot, flt: SearchFilter) -> None:
        self.snapshot = snapshot
        self.flt = flt
        self._lock = threading.Lock()
        self._done = flt.is_empty
        self._mask: np.ndarray | None = None

    def get(self) -> np.ndarray | None:
        if not self._done:
            with self._lock:
                if not self._done:
                    self._mask = row_mask(self.snapshot, self.flt)
                    self._done = True
        return self._mask


def qdrant_filter(flt: SearchFilter) -> models.Filter | None:
    if flt.is_empty:
        return None
    must: list[models.Condition] = []
    if flt.tenant is not None:
        must.append(models.FieldCondition(key="tenant", match=models.MatchValue(value=flt.tenant)))
    if flt.access is not None:
        must.append(acl_condition(flt.access))
    for key, allowed in flt.fields:
        must.append(
            models.Filter(
                should=[
                    models.FieldCondition(key=f"metadata.{key}", match=models.MatchValue(value=value))
                    for _, value in sorted(allowed, key=repr)
                ]
            )
        )
    return models.Filter(must=must)


# an entry no name makes (names are non-empty): the condition of a scope that names no one
_NO_ENTRY = "user:"


def acl_condition(scope: AccessScope) -> models.Filter:
    """The payload condition of :meth:`rag.acl.AccessScope.allows`: ``acl`` holds one of the caller's
    entries, or (unlisted documents public) ``acl`` is empty or missing. Never an empty ``should``: Qdrant
    reads that as no condition at all, so a scope that names no one matches the impossible entry."""
    entries = sorted(scope.entries) or [_NO_ENTRY]
    should: list[models.Condition] = [models.FieldCondition(key="acl", match=models.MatchAny(any=entries))]
    if scope.unlisted is AclDefault.PUBLIC:
        should.append(models.IsEmptyCondition(is_empty=models.PayloadField(key="acl")))
    return models.Filter(should=should)


def visible(snapshot: IndexSnapshot, flt: SearchFilter, results: list[Result]) -> list[Result]:
    """The results ``flt`` lets through, checked chunk by chunk against this version (the last check on
    an answer served under an access scope, from the cache or computed: O(results)). A result whose chunk
    this version does not have is withheld (fail closed). Without a scope: ``results`` unchanged."""
    if flt.access is None:
        return results
    out = []
    for result in results:
        row = snapshot.chunk_rows.get(scoped_id(flt.tenant or "", result.chunk_id))
        if row is not None and flt.matches(snapshot.chunks[row]):
            out.append(result)
    return out
