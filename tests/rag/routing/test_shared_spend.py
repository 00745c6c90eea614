"""Budget spend shared between two replicas through a real Redis (and not with another deployment)."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from rag.resilience.breaker import Breaker, BreakerPolicy, State
from rag.resilience.redis import GuardedRedis, RedisKeys, RedisUnavailable
from rag.rollout.config import Budgets, TenantBudget
from rag.routing.budgets import GLOBAL, BudgetLevel, BudgetMeter, SpendWindow
from rag.routing.shared_spend import SharedSpend
from rag.testing.background import background_errors, until
from rag.testing.servers import RedisServer

pytestmark = pytest.mark.anyio


class Clock:
    t = 1_000_000.0

    def __call__(self) -> float:
        return self.t


spend_key = RedisKeys("svc").spend


def replica(url: str, clock: Clock, collection: str = "svc") -> tuple[BudgetMeter, SharedSpend, GuardedRedis]:
    breaker = Breaker("redis", BreakerPolicy())
    redis = GuardedRedis.connect(url, breaker, timeout_s=0.5, collection=collection)
    policy = Budgets(tenants={"acme": TenantBudget(per_hour=1.0)})
    budgets = BudgetMeter(lambda: policy, SpendWindow(clock))
    shared = SharedSpend(budgets.window, redis)
    budgets.add = shared.add
    return budgets, shared, redis


async def test_two_replicas_see_each_others_spend(redis_url: str) -> None:
    clock = Clock()
    a, sa, ra = replica(redis_url, clock)
    b, sb, rb = replica(redis_url, clock)
    c, sc, rc = replica(redis_url, clock, collection="other")  # another deployment on the same Redis
    try:
        a.record("acme", 0.5)
        b.record("acme", 0.2)
        assert a.state("acme").level is BudgetLevel.OK  # 0.5 of 1.0 on its own
        await sa.sync()
        await sb.sync()
        await sa.sync()
        for budgets in (a, b):
            assert budgets.window.spent("acme") == pytest.approx(0.7)
            assert budgets.window.spent(GLOBAL) == pytest.approx(0.7)
        c.record("acme", 0.05)
        await sc.sync()
        assert c.window.spent("acme") == pytest.approx(0.05)  # its own budgets count its own spend
        b.record("acme", 0.2)  # 0.9 of 1.0 across the deployment: soft on both once synced
        await sb.sync()
        await sa.sync()
        assert a.state("acme").level is BudgetLevel.SOFT and b.state("acme").level is BudgetLevel.SOFT
        clock.t += 3601  # an hour later the spend has rolled off everywhere
        await sa.sync()
        assert a.window.spent("acme") == 0.0
    finally:
        await ra.close()
        await rb.close()
        await rc.close()


async def test_redis_down_keeps_local_spend_and_pushes_it_later(redis_process: RedisServer) -> None:
    clock = Clock()
    a, sa, ra = replica(redis_process.url, clock)
    try:
        redis_process.kill()
        a.record("acme", 0.4)
        with pytest.raises(RedisUnavailable):
            await sa.sync()
        assert a.window.spent("acme") == pytest.approx(0.4)  # budgets still see this replica's spend
        redis_process.restart()
        a.record("acme", 0.1)
        for _ in range(50):  # the redis breaker may be open for a moment after the outage
            try:
                await sa.sync()
                break
            except RedisUnavailable:
                await asyncio.sleep(0.2)
        value = await ra.run(lambda r: r.get(spend_key("acme", int(clock.t // 60))))
        assert float(value) == pytest.approx(0.5)
    finally:
        await ra.close()


async def test_spend_sync_loop_survives_a_malformed_counter_and_applies_the_next_good_one(
    redis_process: RedisServer,
) -> None:
    clock = Clock()
    a, sa, ra = replica(redis_process.url, clock)
    sa.interval_s = 0.01
    writer = Redis.from_url(redis_process.url)
    earlier = spend_key("acme", int(clock.t // 60) - 5)  # another replica's minute: read, never pushed
    try:
        a.record("acme", 0.1)
        await sa.sync()
        sa.start()
        for bad in ("not-a-number", "nan", "inf", "-1", b"\xff\xfe"):
            seen = background_errors("spend_sync")
            await writer.set(earlier, bad)
            await until(lambda seen=seen: background_errors("spend_sync") > seen)  # type: ignore[misc]
            assert a.window.spent("acme") == pytest.approx(0.1)  # the bad minute is skipped, not added
        await writer.set(earlier, "0.5")
        await until(lambda: abs(a.window.spent("acme") - 0.6) < 1e-9)
    finally:
        await sa.close()
        await writer.aclose()
        await ra.close()


async def test_a_malformed_counter_being_pushed_to_neither_trips_the_redis_breaker_nor_loses_spend(
    redis_process: RedisServer,
) -> None:
    clock = Clock()
    a, sa, ra = replica(redis_process.url, clock)
    writer = Redis.from_url(redis_process.url)
    current = spend_key("acme", int(clock.t // 60))
    try:
        await writer.set(current, "not-a-number")
        seen = background_errors("spend_sync")
        for _ in range(10):  # more than enough failed calls to open the breaker if they counted
            a.record("acme", 0.1)
            await sa.sync()
        assert background_errors("spend_sync") >= seen + 10
        assert ra.breaker.state is State.CLOSED
        assert a.window.spent("acme") == pytest.approx(1.0)  # what this replica spent is kept
        await writer.delete(current)  # (the key fixed, or its minute over)
        await sa.sync()
        assert float(await writer.get(current)) == pytest.approx(1.0)  # the held-back spend, pushed once
        assert a.window.spent("acme") == pytest.approx(1.0)
    finally:
        await writer.aclose()
        await ra.close()
