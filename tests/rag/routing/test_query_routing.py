"""The service's routing state: features memoised per index version, bounded."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from rag.config import Settings
from rag.resilience.breaker import Breaker, BreakerPolicy
from rag.resilience.redis import GuardedRedis
from rag.rollout.config import Profile, RolloutConfig
from rag.service import planning
from rag.service.routing import QueryRouting
from rag.testing.servers import RedisServer


def background_errors(loop: str) -> float:
    return REGISTRY.get_sample_value("rag_background_errors_total", {"loop": loop}) or 0.0


def test_features_are_memoised_per_version_and_bounded(settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r = QueryRouting(settings, reranker_available=False)
    calls: list[str] = []
    analyze = r.planner.analyzer.analyze

    def counting(text: str, idf):  # type: ignore[no-untyped-def]
        calls.append(text)
        return analyze(text, idf)

    monkeypatch.setattr(r.planner.analyzer, "analyze", counting)
    monkeypatch.setattr(planning, "FEATURE_MEMO_ENTRIES", 2)

    def decide(text: str, version: str = "v1"):  # type: ignore[no-untyped-def]
        return r.planner.decide(
            "acme", text, idf=lambda t: 3.0, profile=Profile.BALANCED, top_k=10, version=version
        )

    first = decide("who hunts mice")
    assert decide("who hunts mice").features == first.features and calls == ["who hunts mice"]
    decide("who hunts mice", version="v2")  # a new vocabulary: analysed again
    assert calls == ["who hunts mice", "who hunts mice"]
    decide("a")
    decide("b")  # the memo keeps 2 entries: the oldest went
    decide("who hunts mice")
    assert calls[-1] == "who hunts mice" and len(calls) == 5


@pytest.mark.anyio
async def test_feedback_without_a_signal_is_refused_and_the_decision_stays(settings: Settings) -> None:
    r = QueryRouting(settings, reranker_available=False)
    r.learner.decisions.record("req-1", "acme", "hybrid", [1.0] * 10, 1.0, ["d1"])
    with pytest.raises(ValueError, match="feedback must carry"):
        await r.learner.feedback("acme", "req-1")
    assert (await r.learner.feedback("acme", "req-1", rating=5)) is not None


@pytest.mark.anyio
async def test_one_tenants_feedback_moves_another_tenants_arm_probabilities_by_at_most_the_shared_weight(
    settings: Settings,
) -> None:
    """A flood of rewards for one arm from acme: globex's share of that arm moves by at most the stated
    weight (``bandit_shared_weight``), counted over the plans ``decide`` draws for globex."""
    weight = settings.bandit_shared_weight
    config = RolloutConfig.model_validate({"router": {"policy": "bandit", "bandit_epsilon": 0.1}})
    r = QueryRouting(settings, reranker_available=False, config=config, seed=7)
    text = "who hunts mice at night"

    def share(tenant: str, arm: str, n: int = 2000) -> float:
        plans = [
            r.planner.decide(
                tenant, text, idf=lambda t: 4.0, profile=Profile.BALANCED, top_k=10
            ).routed.arm.value
            for _ in range(n)
        ]
        return plans.count(arm) / n

    x = r.planner.decide(
        "acme", text, idf=lambda t: 4.0, profile=Profile.BALANCED, top_k=10
    ).features.vector()
    target = "hybrid"
    before = share("globex", target)
    for i in range(300):  # acme says: always hybrid
        r.learner.decisions.record(f"flood-{i}", "acme", target, x, 1.0, ["d1"])
        assert await r.learner.feedback("acme", f"flood-{i}", rating=5) is not None
    assert share("acme", target) > 0.9  # acme's own plans follow its feedback
    after = share("globex", target)
    assert abs(after - before) <= weight + 0.03, (before, after)  # 0.03: sampling error of 2000 draws


@pytest.mark.anyio
async def test_a_malformed_bandit_state_in_redis_is_counted_skipped_and_replaced_by_the_next_save(
    settings: Settings, redis_process: RedisServer
) -> None:
    breaker = Breaker("redis", BreakerPolicy())
    redis = GuardedRedis.connect(redis_process.url, breaker, timeout_s=0.5, collection=settings.collection)
    try:
        for bad in ("not-json", "[]", '{"schema": 1, "arms": 7}', '{"schema": 1, "tenants": []}'):
            await redis.run(lambda r, bad=bad: r.set(redis.keys.bandit, bad))  # type: ignore[misc]
            seen = background_errors("bandit_store")
            r = QueryRouting(settings, reranker_available=False)
            await r.start(redis)
            assert background_errors("bandit_store") == seen + 1 and r.learner.bandit.counts["hybrid"] == 0
            r.learner.decisions.record("req-1", "acme", "hybrid", [1.0] * 10, 1.0, ["d1"])
            assert await r.learner.feedback("acme", "req-1", rating=5) is not None
            await r.close()  # saves the learnt state over the bad one
            again = QueryRouting(settings, reranker_available=False)
            await again.start(redis)
            assert (
                again.learner.bandit.counts["hybrid"] == 1
                and again.learner.bandit.tenant_counts("acme")["hybrid"] == 1
            )
            await again.close()
    finally:
        await redis.close()
