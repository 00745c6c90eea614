"""The LangChain and LlamaIndex retrievers against a live ``rag serve``: for every demo query (30) they
return the documents ``/query`` returns, in its order, with its scores, and the answer's index version
and degradations in their metadata; sync and async. Without the extra installed, importing an adapter
names the extra to install, and ``rag`` itself never imports either framework."""

from __future__ import annotations

import asyncio
import importlib
import subprocess
import sys
from types import ModuleType
from typing import Any

import httpx
import pytest

from rag.clients import AsyncRagClient, RagClient
from rag.testing.servers import in_ci
from tests.clients.conftest import KEY, REPO, LiveService, demo_queries

pytestmark = pytest.mark.integration

TOP_K = 10


def framework(module: str) -> ModuleType:
    """The adapter module; skipped locally when its framework is not installed, a failure under CI=true
    (the dev extra installs both)."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def query_json(service: LiveService, text: str) -> dict[str, Any]:
    response = httpx.post(
        f"{service.url}/query",
        json={"query": text, "top_k": TOP_K},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def expected(body: dict[str, Any]) -> list[tuple[str, str, str, float, int]]:
    return [(r["doc_id"], r["chunk_id"], r["text"], r["score"], r["rank"]) for r in body["results"]]


def langchain_rows(docs: list[Any]) -> list[tuple[str, str, str, float, int]]:
    return [
        (d.metadata["doc_id"], d.id, d.page_content, d.metadata["score"], d.metadata["rank"]) for d in docs
    ]


def llamaindex_rows(nodes: list[Any]) -> list[tuple[str, str, str, float, int]]:
    return [(n.node.ref_doc_id, n.node.node_id, n.node.text, n.score, n.node.metadata["rank"]) for n in nodes]


def test_the_langchain_retriever_returns_what_query_returns(demo_service: LiveService) -> None:
    lc = framework("rag.clients.langchain")
    queries = demo_queries()
    assert len(queries) >= 20
    with RagClient(demo_service.url, KEY) as client:
        retriever = lc.RagLangChainRetriever(client=client, top_k=TOP_K)
        for text in queries:
            docs = retriever.invoke(text)
            body = query_json(demo_service, text)
            assert langchain_rows(docs) == expected(body), text
            assert len(docs) == TOP_K
            for doc in docs:
                assert doc.metadata["index_version"] == body["index_version"]
                assert doc.metadata["degraded"] == body["degraded"]
            first = body["results"][0]
            assert docs[0].metadata["title"] == first["title"]
            assert docs[0].metadata["metadata"] == first["metadata"]


def test_the_llamaindex_retriever_returns_what_query_returns(demo_service: LiveService) -> None:
    li = framework("rag.clients.llamaindex")
    from llama_index.core.schema import MetadataMode

    queries = demo_queries()
    with RagClient(demo_service.url, KEY) as client:
        retriever = li.RagLlamaIndexRetriever(client, top_k=TOP_K)
        for text in queries:
            nodes = retriever.retrieve(text)
            body = query_json(demo_service, text)
            assert llamaindex_rows(nodes) == expected(body), text
            for node in nodes:
                assert node.node.metadata["index_version"] == body["index_version"]
                assert node.node.metadata["degraded"] == body["degraded"]
        # what an LLM is shown: the passage and its title, not the service's bookkeeping
        shown = nodes[0].node.get_content(metadata_mode=MetadataMode.LLM)
        assert nodes[0].node.text in shown and "index_version" not in shown


def test_the_async_retrievers_return_what_query_returns(demo_service: LiveService) -> None:
    lc = framework("rag.clients.langchain")
    li = framework("rag.clients.llamaindex")
    queries = demo_queries()[:8]

    async def run() -> None:
        async with AsyncRagClient(demo_service.url, KEY) as aclient:
            with RagClient(demo_service.url, KEY) as client:
                retrievers = [
                    (lc.RagLangChainRetriever(async_client=aclient, top_k=TOP_K), "ainvoke", langchain_rows),
                    (
                        li.RagLlamaIndexRetriever(async_client=aclient, top_k=TOP_K),
                        "aretrieve",
                        llamaindex_rows,
                    ),
                    # only a sync client: the async call runs it in a thread
                    (lc.RagLangChainRetriever(client=client, top_k=TOP_K), "ainvoke", langchain_rows),
                    (li.RagLlamaIndexRetriever(client, top_k=TOP_K), "aretrieve", llamaindex_rows),
                ]
                for retriever, method, rows in retrievers:
                    got = await asyncio.gather(*(getattr(retriever, method)(q) for q in queries))
                    for text, items in zip(queries, got, strict=True):
                        assert rows(items) == expected(query_json(demo_service, text)), (method, text)

    asyncio.run(run())


def test_request_fields_reach_the_service_through_a_retriever(demo_service: LiveService) -> None:
    lc = framework("rag.clients.langchain")
    li = framework("rag.clients.llamaindex")
    sent: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [sent.append]})
    with RagClient(demo_service.url, KEY, http=http) as client:
        lc.RagLangChainRetriever(client=client, top_k=3, profile="latency", principal="user:alice").invoke(
            "x"
        )
        li.RagLlamaIndexRetriever(client, top_k=2, principal="user:bob;groups=eng").retrieve("y")
    assert [r.headers["x-rag-principal"] for r in sent] == ["user:alice", "user:bob;groups=eng"]
    assert [r.read() for r in sent] == [
        b'{"query":"x","top_k":3,"profile":"latency"}',
        b'{"query":"y","top_k":2}',
    ]
    with pytest.raises(ValueError, match="top_k must be at least 1, got 0"):
        li.RagLlamaIndexRetriever(client, top_k=0)
    with pytest.raises(ValueError, match="give client="):
        lc.RagLangChainRetriever()


@pytest.mark.parametrize(
    ("adapter", "package", "extra"),
    [
        ("rag.clients.langchain", "langchain_core", "langchain"),
        ("rag.clients.llamaindex", "llama_index", "llamaindex"),
    ],
)
def test_without_the_extra_the_adapter_names_what_to_install(
    adapter: str, package: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "not installed": importing it or any of its modules raises ImportError (loaded ones included)
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")] + [package]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.delitem(sys.modules, adapter, raising=False)
    with pytest.raises(ImportError, match=rf"pip install 'rag-retrieval-service\[{extra}\]'"):
        importlib.import_module(adapter)


def test_rag_itself_imports_neither_framework() -> None:
    code = (
        "import sys, rag.clients, api.app, rag.cli\n"
        "loaded = [m for m in ('langchain_core', 'llama_index') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, capture_output=True)
