"""Search filters: the caller's tenant plus equality filters on document metadata.

One filter is applied twice, consistently: as a boolean row mask over the snapshot's chunks (BM25, and a
check on every dense hit) and as a Qdrant payload filter (so the vector search itself only returns
matching points). The snapshot check is what guarantees isolation; the Qdrant filter is what keeps the
dense candidate list full.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import models

from rag.index.snapshot import ChunkRecord, IndexSnapshot

Scalar = str | int | bool
MAX_FILTER_FIELDS = 8
MAX_FILTER_VALUES = 64
MAX_FILTER_STRING = 256
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
_FIELD_RE = re.compile(FIELD_PATTERN)


class FilterError(ValueError):
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

    @classmethod
    def of(cls, tenant: str | None, filters: Mapping[str, Any] | None = None) -> SearchFilter:
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
        return cls(tenant, tuple(fields))

    @property
    def is_empty(self) -> bool:
        return self.tenant is None and not self.fields

    def matches(self, chunk: ChunkRecord) -> bool:
        if self.tenant is not None and chunk.tenant != self.tenant:
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


def row_mask(snapshot: IndexSnapshot, flt: SearchFilter) -> np.ndarray | None:
    """Boolean mask of the snapshot rows that pass ``flt``; None when the filter lets everything through."""
    if flt.is_empty:
        return None
    mask = snapshot.tenant_rows(flt.tenant) if flt.tenant is not None else np.ones(len(snapshot.chunks), bool)
    if not flt.fields:
        return mask
    rows = np.flatnonzero(mask)
    keep = np.fromiter((flt.matches(snapshot.chunks[r]) for r in rows), dtype=bool, count=len(rows))
    out = np.zeros(len(snapshot.chunks), dtype=bool)
    out[rows[keep]] = True
    return out


def qdrant_filter(flt: SearchFilter) -> models.Filter | None:
    if flt.is_empty:
        return None
    must: list[models.Condition] = []
    if flt.tenant is not None:
        must.append(models.FieldCondition(key="tenant", match=models.MatchValue(value=flt.tenant)))
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
