"""Where the service analyses a query: on the event loop when it is short (cheaper than a hand-off), in
a worker thread when it is long (the analysis is linear in its length), and not at all when memoised."""

from __future__ import annotations

import asyncio
import threading

import pytest

from rag.config import Settings
from rag.routing.analyzer import QueryAnalyzer, QueryFeatures
from rag.service.answer import QueryRequest
from rag.service.queries import ANALYZE_OFF_LOOP_CHARS
from rag.service.service import RetrievalService
from rag.types import Document


def test_a_long_query_is_analysed_off_the_event_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings.model_copy(
        update={"api_keys": None, "rate_limit_qps": 0.0, "cache_enabled": False, "deadline_ms": 60_000}
    )
    threads: list[tuple[int, int]] = []  # (query length, thread that analysed it)
    original = QueryAnalyzer.analyze

    def recording(self: QueryAnalyzer, text: str, *args: object, **kwargs: object) -> QueryFeatures:
        threads.append((len(text), threading.get_ident()))
        return original(self, text, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(QueryAnalyzer, "analyze", recording)
    short = "which animals hunt mice"
    long = " ".join(["which nocturnal animals hunt mice in the forest at night"] * 30)
    assert len(short) <= ANALYZE_OFF_LOOP_CHARS < len(long) <= 2048

    async def main() -> int:
        service = RetrievalService(settings)
        await service.start()
        await service.lifecycle.wait_loaded()
        docs = [
            Document(f"d{i}", f"owls and cats number {i} hunt mice at night", "t", {}, "acme")
            for i in range(20)
        ]
        _, done = await service.ingestion.submit("acme", docs, [])
        await asyncio.wrap_future(done)
        for text in (short, long, long):  # the repeat is memoised: no second analysis
            answer = await service.queries.query(QueryRequest("acme", text))
            assert answer.results, answer.degraded
        await service.stop()
        return threading.get_ident()

    loop_thread = asyncio.run(main())
    assert [n for n, _ in threads] == [len(short), len(long)]
    assert threads[0][1] == loop_thread, "a short query is analysed in place"
    assert threads[1][1] != loop_thread, "a long query was analysed on the event loop's thread"
