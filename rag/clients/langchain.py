"""A LangChain retriever over the service: ``retriever.invoke(query)`` (or ``await ainvoke``) is one
``POST /query``; each result is a ``Document`` with the passage's text, ``id`` = its chunk id and the
metadata of :func:`rag.clients.adapters.passage_metadata` (doc id, score, rank, index version,
degradations). Needs the ``langchain`` extra (``langchain-core``)::

    from rag.clients import RagClient
    from rag.clients.langchain import RagLangChainRetriever

    retriever = RagLangChainRetriever(client=RagClient("http://localhost:8000", "tenant-key"), top_k=5)
    docs = retriever.invoke("what do owls hunt?")
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "rag.clients.langchain needs langchain-core: pip install 'rag-retrieval-service[langchain]'"
    ) from exc

from rag.clients.adapters import QueryParams, passage_metadata
from rag.clients.client import AsyncRagClient, FilterValue, RagClient
from rag.clients.types import QueryResult


def to_documents(answer: QueryResult) -> list[Document]:
    """The answer's results as LangChain documents, in the service's order."""
    return [
        Document(page_content=r.text, id=r.chunk_id or None, metadata=passage_metadata(answer, r))
        for r in answer.results
    ]


class RagLangChainRetriever(BaseRetriever):
    """``client`` answers ``invoke``; ``async_client`` answers ``ainvoke`` (without one, ``ainvoke`` runs
    ``client`` in a thread). The request fields are the same for every query: ``top_k``, ``filters``,
    ``profile``, ``principal`` (``X-RAG-Principal``), ``fields`` (newer request fields), ``timeout_s``."""

    client: RagClient | None = None
    async_client: AsyncRagClient | None = None
    top_k: int = 10
    filters: Mapping[str, FilterValue] | None = None
    profile: str | None = None
    principal: str | None = None
    fields: Mapping[str, Any] | None = None
    timeout_s: float | None = None

    def model_post_init(self, context: Any, /) -> None:
        super().model_post_init(context)
        if self.client is None and self.async_client is None:
            raise ValueError("give client=RagClient(...) and/or async_client=AsyncRagClient(...)")
        self._params()  # validates top_k now, not at the first query

    def _params(self) -> QueryParams:
        return QueryParams(
            top_k=self.top_k,
            filters=self.filters,
            profile=self.profile,
            principal=self.principal,
            fields=self.fields,
            timeout_s=self.timeout_s,
        )

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.client is None:
            raise ValueError("invoke needs client=RagClient(...) (this retriever has only an async_client)")
        return to_documents(self.client.query(query, **self._params().kwargs()))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun
    ) -> list[Document]:
        if self.async_client is None:
            assert self.client is not None
            answer = await asyncio.to_thread(self.client.query, query, **self._params().kwargs())
        else:
            answer = await self.async_client.query(query, **self._params().kwargs())
        return to_documents(answer)
