"""A LlamaIndex retriever over the service: ``retriever.retrieve(query)`` (or ``await aretrieve``) is one
``POST /query``; each result is a ``NodeWithScore`` whose ``TextNode`` has the passage's text, ``id_`` =
its chunk id, the document as its source (``node.ref_doc_id``), the service's score, and the metadata of
:func:`rag.clients.adapters.passage_metadata` (kept out of what an LLM or an embedder is shown). Needs the
``llamaindex`` extra (``llama-index-core``)::

    from rag.clients import RagClient
    from rag.clients.llamaindex import RagLlamaIndexRetriever

    retriever = RagLlamaIndexRetriever(RagClient("http://localhost:8000", "tenant-key"), top_k=5)
    nodes = retriever.retrieve("what do owls hunt?")
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

try:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.schema import (
        NodeRelationship,
        NodeWithScore,
        QueryBundle,
        RelatedNodeInfo,
        TextNode,
    )
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "rag.clients.llamaindex needs llama-index-core: pip install 'rag-retrieval-service[llamaindex]'"
    ) from exc

from rag.clients.adapters import SERVICE_KEYS, QueryParams, passage_metadata
from rag.clients.client import AsyncRagClient, FilterValue, RagClient
from rag.clients.types import QueryResult

# what an LLM prompt or an embedding of the node leaves out (the title stays: it is the passage's)
HIDDEN_KEYS = [key for key in (*SERVICE_KEYS, "extra") if key != "title"]


def to_nodes(answer: QueryResult) -> list[NodeWithScore]:
    """The answer's results as scored LlamaIndex nodes, in the service's order."""
    nodes = []
    for r in answer.results:
        node = TextNode(
            id_=r.chunk_id or f"{r.doc_id}#{r.rank}",
            text=r.text,
            metadata=passage_metadata(answer, r),
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=r.doc_id)},
            excluded_llm_metadata_keys=HIDDEN_KEYS,
            excluded_embed_metadata_keys=HIDDEN_KEYS,
        )
        nodes.append(NodeWithScore(node=node, score=r.score))
    return nodes


class RagLlamaIndexRetriever(BaseRetriever):
    """``client`` answers ``retrieve``; ``async_client`` answers ``aretrieve`` (without one, ``aretrieve``
    runs ``client`` in a thread). The request fields are the same for every query, as in
    :class:`rag.clients.langchain.RagLangChainRetriever`."""

    def __init__(
        self,
        client: RagClient | None = None,
        *,
        async_client: AsyncRagClient | None = None,
        top_k: int = 10,
        filters: Mapping[str, FilterValue] | None = None,
        profile: str | None = None,
        principal: str | None = None,
        fields: Mapping[str, Any] | None = None,
        timeout_s: float | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("give client=RagClient(...) and/or async_client=AsyncRagClient(...)")
        self.client = client
        self.async_client = async_client
        self.params = QueryParams(
            top_k=top_k,
            filters=filters,
            profile=profile,
            principal=principal,
            fields=fields,
            timeout_s=timeout_s,
        )
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.client is None:
            raise ValueError("retrieve needs client=RagClient(...) (this retriever has only an async_client)")
        return to_nodes(self.client.query(query_bundle.query_str, **self.params.kwargs()))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        if self.async_client is None:
            assert self.client is not None
            answer = await asyncio.to_thread(
                self.client.query, query_bundle.query_str, **self.params.kwargs()
            )
        else:
            answer = await self.async_client.query(query_bundle.query_str, **self.params.kwargs())
        return to_nodes(answer)
