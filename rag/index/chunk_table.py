"""The chunk table's rows: :class:`ChunkRecord` and its JSON-lines file format."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.tenancy import scoped_id
from rag.types import passage_text


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    chunk_id: str
    doc_id: str
    ordinal: int
    title: str
    text: str
    point_id: str
    metadata: dict[str, Any]
    tenant: str = ""
    acl: tuple[str, ...] = ()  # sorted entries (rag.acl.check_acl); (): no ACL, the tenant's default applies

    @property
    def passage(self) -> str:
        return passage_text(self.title, self.text)

    @property
    def doc_key(self) -> str:
        """The tenant-scoped document id (unique in the index)."""
        return scoped_id(self.tenant, self.doc_id)

    @property
    def chunk_key(self) -> str:
        """The tenant-scoped chunk id (unique in the index)."""
        return scoped_id(self.tenant, self.chunk_id)

    def to_json(self) -> str:
        row: dict[str, Any] = {
            "chunk_id": self.chunk_id,
            "doc_id": self.doc_id,
            "ordinal": self.ordinal,
            "title": self.title,
            "text": self.text,
            "point_id": self.point_id,
            "metadata": self.metadata,
            "tenant": self.tenant,
        }
        if self.acl:  # absent = no ACL: a row without one is byte-identical to one written before ACLs
            row["acl"] = list(self.acl)
        return json.dumps(row, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> ChunkRecord:
        d = json.loads(line)
        return cls(
            d["chunk_id"],
            d["doc_id"],
            d["ordinal"],
            d["title"],
            d["text"],
            d["point_id"],
            d["metadata"],
            d.get("tenant", ""),
            tuple(d.get("acl", ())),
        )


def write_chunks(path: Path, chunks: Sequence[ChunkRecord]) -> None:
    with path.open("w", encoding="utf-8") as fh:
        for chunk in chunks:
            fh.write(chunk.to_json())
            fh.write("\n")


def read_chunks(path: Path) -> list[ChunkRecord]:
    with path.open(encoding="utf-8") as fh:
        return [ChunkRecord.from_json(line) for line in fh if line.strip()]
