"""Value types shared by every stage. Frozen dataclasses, so the type checker sees the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chunk:
    """A retrievable piece of a document; ``chunk_id`` is ``<doc_id>#<n>``."""

    chunk_id: str
    doc_id: str
    ordinal: int
    title: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_text(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text


@dataclass(frozen=True, slots=True)
class Hit:
    """One ranked document from a retriever, the fusion or the reranker."""

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
