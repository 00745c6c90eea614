"""Value types shared by every stage. Frozen dataclasses, so the type checker sees the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rag.tenancy import scoped_id


def passage_text(title: str, text: str) -> str:
    """What is embedded, indexed and shown to the reranker: the title line (if any), then the text."""
    return f"{title}\n{text}" if title else text


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""  # "" = the unscoped namespace (see rag.tenancy)

    @property
    def key(self) -> str:
        """The index-wide id: the document id scoped by its tenant."""
        return scoped_id(self.tenant, self.doc_id)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document; ``chunk_id`` is ``<doc_id>#<n>``."""

    chunk_id: str
    doc_id: str
    ordinal: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    tenant: str = ""

    @property
    def passage(self) -> str:
        return passage_text(self.title, self.text)


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document from a retriever, the fusion or the reranker.

    ``doc_id`` and ``chunk_id`` are index-wide *scoped* ids (:func:`rag.tenancy.scoped_id`); for the
    unscoped namespace they are the plain ids. :class:`Result` carries the plain ones.
    """

    doc_id: str
    score: float
    chunk_id: str


@dataclass(frozen=True, slots=True)
class Result:
    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    chunk_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
