"""Helpers for tests of background loops: how many errors a loop counted, and waiting for a condition
by a number of polls (never by a time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import REGISTRY


def background_errors(loop: str) -> float:
    """``rag_background_errors_total{loop}`` so far (0 before the first error)."""
    return REGISTRY.get_sample_value("rag_background_errors_total", {"loop": loop}) or 0.0


async def until(condition: Callable[[], bool], *, rounds: int = 500, poll_s: float = 0.01) -> None:
    """Poll ``condition`` (loops under test run every 10 ms); fails after ``rounds`` polls, not after a
    time."""
    for _ in range(rounds):
        if condition():
            return
        await asyncio.sleep(poll_s)
    raise AssertionError("condition never held")
