"""What the framework retrievers (:mod:`rag.clients.langchain`, :mod:`rag.clients.llamaindex`) share: the
request a retriever makes for every query, and the metadata each returned passage carries. No framework
import here: both adapters stay a few lines over the client.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rag.clients.client import FilterValue
from rag.clients.types import QueryResult, SearchResult

SERVICE_KEYS = (
    "doc_id",
    "chunk_id",
    "title",
    "score",
    "rank",
    "index_version",
    "degraded",
    "cache",
    "request_id",
    "metadata",
)
"""The metadata keys a passage gets from the service (the document's own metadata is under
``metadata``, so that it never shadows these)."""


@dataclass(frozen=True, slots=True)
class QueryParams:
    """The request fields a retriever sends with each query (see :meth:`RagClient.query`)."""

    top_k: int = 10
    filters: Mapping[str, FilterValue] | None = None
    profile: str | None = None
    principal: str | None = None
    fields: Mapping[str, Any] | None = field(default=None)
    timeout_s: float | None = None

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {self.top_k}")

    def kwargs(self) -> dict[str, Any]:
        return {
            "top_k": self.top_k,
            "filters": self.filters,
            "profile": self.profile,
            "principal": self.principal,
            "fields": self.fields,
            "timeout_s": self.timeout_s,
        }


def passage_metadata(answer: QueryResult, result: SearchResult) -> dict[str, Any]:
    """One passage's metadata: its ids, score and rank, and the answer's ``index_version``, ``degraded``
    (``[{step, code, reason}]``: empty when every planned step ran), ``cache`` and ``request_id`` (what
    ``feedback`` takes). Fields a newer server adds to a result are under ``extra``."""
    meta: dict[str, Any] = {
        "doc_id": result.doc_id,
        "chunk_id": result.chunk_id,
        "title": result.title,
        "score": result.score,
        "rank": result.rank,
        "index_version": answer.index_version,
        "degraded": [d.to_json() for d in answer.degraded],
        "cache": answer.cache,
        "request_id": answer.request_id,
        "metadata": dict(result.metadata),
    }
    if result.extra:
        meta["extra"] = dict(result.extra)
    return meta
