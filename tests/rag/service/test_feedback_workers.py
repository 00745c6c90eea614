"""Two workers' feedback learners on one data dir and no Redis (``rag serve --workers 2``): a decision
kept by one is rated through the other, once, through the data dir's SQLite file; a corrupt file leaves
each worker on its own decisions and never fails; with Redis configured, Redis stays the shared store."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from rag.bandit.pending import RedisDecisions
from rag.bandit.pending_sqlite import SqliteDecisions
from rag.config import Settings
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis
from rag.service.feedback import FeedbackLearner
from rag.service.routing import QueryRouting
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

X = [1.0] * 10


def pending_file(settings: Settings) -> Path:
    return settings.data_dir / "feedback" / f"{settings.collection}-pending.sqlite"  # as the service names it


@pytest.fixture
async def worker(settings: Settings) -> AsyncIterator[Callable[..., FeedbackLearner]]:
    """Start a worker's routing state on the test's data dir, without Redis."""
    started: list[QueryRouting] = []

    async def make() -> FeedbackLearner:
        routing = QueryRouting(settings, reranker_available=False)
        bandit_file = settings.data_dir / "bandit" / f"{settings.collection}.json"
        await routing.start(None, bandit_file, pending_file(settings))
        started.append(routing)
        return routing.learner

    yield make  # type: ignore[misc]
    for routing in started:
        await routing.close()


async def answer(learner: FeedbackLearner, request_id: str, tenant: str = "acme") -> None:
    """What the service does for a routed answer: keep the decision, wait until it is shared."""
    learner.decisions.record(request_id, tenant, "hybrid", X, 1.0, ["d1"], cost=0.01)
    await learner.remembered(tenant, request_id)


def rows(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        (n,) = conn.execute("SELECT COUNT(*) FROM pending").fetchone()
    conn.close()
    return int(n)


async def test_feedback_on_worker_2_for_an_answer_of_worker_1_is_applied_once(
    worker: Callable[..., FeedbackLearner], settings: Settings
) -> None:
    one, two = await worker(), await worker()  # type: ignore[misc]
    assert isinstance(one.decisions.shared, SqliteDecisions)
    for i in range(10):
        await answer(one, f"req-{i}")
    assert len(one.decisions) == 0 and rows(pending_file(settings)) == 10  # in the file, not in worker 1
    for i in range(10):
        assert await two.feedback("acme", f"req-{i}", rating=4) is not None
        assert await one.feedback("acme", f"req-{i}", rating=4) is None  # already rated
        assert await two.feedback("acme", f"req-{i}", rating=4) is None
    assert two.bandit.counts["hybrid"] == 10 and one.bandit.counts["hybrid"] == 0
    assert await two.feedback("globex", "req-0", rating=4) is None  # another tenant's id reaches nothing
    assert rows(pending_file(settings)) == 0


async def test_a_corrupt_file_leaves_each_worker_its_own_decisions(
    worker: Callable[..., FeedbackLearner], settings: Settings
) -> None:
    db = pending_file(settings)
    db.parent.mkdir(parents=True)
    db.write_bytes(b"\x00garbage" * 512)
    one, two = await worker(), await worker()  # type: ignore[misc]
    assert one.decisions.shared is None and two.decisions.shared is None  # logged, not shared
    await answer(one, "req-1")
    assert len(one.decisions) == 1
    assert await two.feedback("acme", "req-1", rating=4) is None  # not reachable from another worker...
    assert await one.feedback("acme", "req-1", rating=4) is not None  # ...but never lost, nor an error


async def test_with_redis_configured_redis_is_the_shared_store(
    settings: Settings, redis_process: RedisServer
) -> None:
    breaker = Breaker("redis", BreakerPolicy())
    redis = GuardedRedis.connect(redis_process.url, breaker, timeout_s=0.5, collection=settings.collection)
    routing = QueryRouting(settings, reranker_available=False)
    try:
        await routing.start(redis, None, pending_file(settings))
        assert isinstance(routing.learner.decisions.shared, RedisDecisions)
        await answer(routing.learner, "req-1")
        assert not pending_file(settings).exists()  # spans machines: the file is not used
    finally:
        await routing.close()
        await redis.close()
