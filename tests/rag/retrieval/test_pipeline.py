"""The pipeline keeps CPU work that scales with the query or the index off the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from typing import Any

import pytest

from rag.config import Settings
from rag.retrieval import multiquery
from rag.retrieval.filters import SearchFilter
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import PipelineName, plan_for
from rag.testing.fakes import ThreadedCompute
from tests.rag.retrieval.test_filters import _corpus, _snapshot


def test_query_decomposition_runs_off_the_event_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Decomposition tokenises the query once per candidate cut: up to ~180 ms CPU for 2,048 characters
    of ``"a;"`` (multiquery.decompose); it runs in a worker thread, not the event loop's."""
    threads: list[int] = []
    original = multiquery.decompose

    def recording(query: str, *args: Any, **kwargs: Any) -> list[str]:
        threads.append(threading.get_ident())
        return original(query, *args, **kwargs)

    monkeypatch.setattr("rag.retrieval.pipeline_run.decompose", recording)
    pipeline = SearchPipeline(_snapshot(_corpus(50), texts=True), None, None, compute=ThreadedCompute())
    plan = dataclasses.replace(
        plan_for(PipelineName.BM25, settings, top_k=5, reranker_available=False), multi_query=True
    )

    async def main() -> int:
        await pipeline.run("text 1; text 2 and more text", plan, SearchFilter.of("acme"))
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert threads and loop_thread not in threads, "decompose ran on the event loop's thread"
