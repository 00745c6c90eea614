"""Two replicas' feedback learners over one real redis-server: a decision kept by one is rated through the
other, once; interleaved feedback on both ends in the bandit one learner fed both streams has; with Redis
paused, feedback is kept in process and merged (not overwritten) once Redis is back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import numpy as np
import pytest

from rag.config import Settings
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis
from rag.routing.analyzer import FEATURE_NAMES
from rag.routing.router import ARMS
from rag.service.feedback import FeedbackLearner
from rag.service.routing import QueryRouting
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio

Feedback = tuple[str, str, list[float], int]  # tenant, arm, features, rating


def feedback_stream(seed: int, n: int) -> list[Feedback]:
    rng = np.random.default_rng(seed)
    arms = [a.value for a in ARMS]
    return [
        (
            str(rng.choice(["acme", "globex"])),
            str(rng.choice(arms)),
            [1.0, *rng.uniform(0, 1, size=len(FEATURE_NAMES) - 1).tolist()],
            int(rng.integers(1, 6)),
        )
        for _ in range(n)
    ]


def assert_same_bandit(got: FeedbackLearner, want: FeedbackLearner) -> None:
    g, w = got.bandit.to_state(), want.bandit.to_state()
    assert sorted(g["tenants"]) == sorted(w["tenants"])
    for a, b in [(g, w), *((g["tenants"][t], w["tenants"][t]) for t in w["tenants"])]:
        assert a["counts"] == b["counts"]
        for arm in a["A"]:
            assert np.allclose(a["A"][arm], b["A"][arm], rtol=1e-12, atol=1e-12)
            assert np.allclose(a["b"][arm], b["b"][arm], rtol=1e-12, atol=1e-12)


async def rate(
    learner: FeedbackLearner, request_id: str, fb: Feedback, *, answered_by: FeedbackLearner | None = None
) -> None:
    """Keep the decision on ``answered_by`` (default: ``learner``), then rate it through ``learner``."""
    tenant, arm, x, rating = fb
    keeper = answered_by or learner
    keeper.decisions.record(request_id, tenant, arm, x, 1.0, ["d1"], cost=0.01)
    await keeper.remembered(tenant, request_id)
    assert await learner.feedback(tenant, request_id, rating=rating) is not None


@pytest.fixture
async def replica(
    settings: Settings, redis_process: RedisServer
) -> AsyncIterator[Callable[..., QueryRouting]]:
    """Start a replica's routing state on the test's Redis (its own client; a breaker that stays closed,
    so every call tries Redis)."""
    started: list[tuple[QueryRouting, GuardedRedis]] = []

    async def make(timeout_s: float = 0.5, sync_s: float = 10.0) -> QueryRouting:
        policy = BreakerPolicy(min_calls=1000, window_calls=1000)
        redis = GuardedRedis.connect(
            redis_process.url, Breaker("redis", policy), timeout_s=timeout_s, collection=settings.collection
        )
        routing = QueryRouting(
            settings.model_copy(update={"bandit_sync_s": sync_s}), reranker_available=False
        )
        await routing.start(redis)
        started.append((routing, redis))
        return routing

    yield make  # type: ignore[misc]
    redis_process.resume()
    for routing, redis in started:
        await routing.close()
        await redis.close()


async def test_feedback_on_replica_2_for_an_answer_of_replica_1_is_applied_once(
    replica: Callable[..., QueryRouting],
) -> None:
    one, two = (await replica()).learner, (await replica()).learner  # type: ignore[misc]
    fb = feedback_stream(1, 1)[0]
    await rate(two, "req-1", fb, answered_by=one)
    assert two.bandit.counts[fb[1]] == 1
    tenant = fb[0]
    assert await one.feedback(tenant, "req-1", rating=5) is None  # already rated
    assert await two.feedback(tenant, "req-1", rating=5) is None


async def test_interleaved_feedback_on_two_replicas_equals_one_replica_fed_both(
    replica: Callable[..., QueryRouting], settings: Settings
) -> None:
    one, two = (await replica()).learner, (await replica()).learner  # type: ignore[misc]
    alone = QueryRouting(settings, reranker_available=False).learner  # no store: one process, both streams
    first, second = feedback_stream(2, 45), feedback_stream(3, 45)
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        await rate(one, f"one-{i}", a, answered_by=two if i % 3 == 0 else one)  # some answered elsewhere
        await rate(two, f"two-{i}", b)
        await rate(alone, f"alone-a-{i}", a)
        await rate(alone, f"alone-b-{i}", b)
        if i % 7 == 3:
            await one.sync()  # the periodic syncs, at moments of their own on each replica
        if i % 11 == 5:
            await two.sync()
    # the last merges, and each takes the other's
    await one.sync()
    await two.sync()
    await one.sync()
    assert one.shared.pending == two.shared.pending == 0
    assert_same_bandit(one, alone)
    assert_same_bandit(two, alone)


async def test_with_redis_paused_feedback_is_kept_and_merged_when_it_is_back(
    replica: Callable[..., QueryRouting], redis_process: RedisServer, settings: Settings
) -> None:
    one = (await replica(timeout_s=0.2)).learner  # type: ignore[misc]
    two = (await replica(timeout_s=0.2)).learner  # type: ignore[misc]
    alone = QueryRouting(settings, reranker_available=False).learner
    before, during, after = feedback_stream(4, 5), feedback_stream(5, 4), feedback_stream(6, 3)

    async def both(learner: FeedbackLearner, name: str, stream: Sequence[Feedback]) -> None:
        for i, fb in enumerate(stream):
            await rate(learner, f"{name}-{i}", fb)
            await rate(alone, f"alone-{name}-{i}", fb)

    await both(one, "before", before)
    await one.sync()  # in Redis
    redis_process.pause()
    await both(one, "during", during)  # decisions and updates stay in process
    await one.sync()  # fails: kept for the next
    assert one.shared.pending == len(during)
    redis_process.resume()
    await both(two, "after", after)
    await two.sync()  # two's updates land first...
    await one.sync()  # ...one's are added to them, not written over them
    await two.sync()
    assert_same_bandit(one, alone)
    assert_same_bandit(two, alone)


async def test_replicas_learn_each_others_feedback_at_the_periodic_sync(
    replica: Callable[..., QueryRouting],
) -> None:
    one = (await replica(sync_s=0.02)).learner  # type: ignore[misc]
    two = (await replica(sync_s=0.02)).learner  # type: ignore[misc]
    fb = feedback_stream(7, 1)[0]
    await rate(one, "req-1", fb)
    for _ in range(500):  # at most ~10 s; a sync every 20 ms on each side
        if two.bandit.counts[fb[1]] == 1:
            break
        await asyncio.sleep(0.02)
    assert two.bandit.counts[fb[1]] == 1 and two.bandit.tenant_counts(fb[0])[fb[1]] == 1
    assert one.shared.pending == 0
