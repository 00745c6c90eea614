"""The lexical guard's CPU (it scales with query length) runs in a worker thread, once per L2 lookup for
the whole batch of neighbours, never on the event loop."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from rag.cache import semantic
from rag.cache.guard import GuardVerdict
from rag.cache.semantic import QueryCache
from rag.text.analyzer import Analyzer
from tests.rag.cache.conftest import DIM, answer, no_idf, ns, vector

pytestmark = pytest.mark.anyio


async def test_l2_guard_checks_run_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    cache = QueryCache(dim=DIM, analyzer=Analyzer(), threshold=0.5, ttl_s=600.0)
    base = vector(1)
    for i in range(4):  # four cached neighbours of the query, all refused by the guard but the last
        await cache.put(ns(), f"cached {i}", base + 0.01 * i, answer(doc=f"d{i}"))
    threads: list[int] = []

    def check(a: str, b: str, *args: Any, **kwargs: Any) -> GuardVerdict:
        threads.append(threading.get_ident())
        return GuardVerdict(a == "cached 3")

    hand_offs = 0
    to_thread = asyncio.to_thread

    async def counting_to_thread(fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        nonlocal hand_offs
        hand_offs += 1
        return await to_thread(fn, *args, **kwargs)

    monkeypatch.setattr(semantic, "check", check)
    monkeypatch.setattr(asyncio, "to_thread", counting_to_thread)
    hit = await cache.get_similar(ns(), "a new query", base, no_idf)
    assert hit is not None and hit.answer["results"][0]["doc_id"] == "d3"
    assert len(threads) == 4
    assert threading.get_ident() not in threads  # the loop's thread ran none of them
    assert hand_offs == 1  # one hand-off for the batch, not one per neighbour
    # no neighbour at all: no hand-off either
    assert await cache.get_similar(ns(kind="other"), "a new query", base, no_idf) is None
    assert hand_offs == 1
