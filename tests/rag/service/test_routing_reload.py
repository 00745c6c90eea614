"""A rollout config reload is all-or-nothing: every part of the routing policy (flags, profiles, prices,
budgets, fallback, shadow sampler, bandit) serves the new version, or every part keeps the old one."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.config import Settings
from rag.rollout import policy as policy_module
from rag.rollout.config import FallbackSection, Profile, RolloutConfig
from rag.service.routing import QueryRouting
from rag.testing.background import background_errors

OLD = """
[prices]
currency = "USD"
[budgets]
soft_fraction = 0.8
[shadow]
rate = 0.1
[fallback]
min_samples = 20
[router]
bandit_alpha = 0.5
"""

NEW = """
[prices]
currency = "EUR"
[budgets]
soft_fraction = {soft}
[profiles.latency]
max_rerank_depth = 7
[[flags]]
name = "multi_query"
enabled = true
rollout_percent = 100.0
[shadow]
rate = 0.3
[fallback]
min_samples = 7
[router]
bandit_alpha = 0.9
"""


def parts(routing: QueryRouting) -> dict[str, object]:
    """What each part of the routing state serves, by the value the configs above set for it."""
    return {
        "version": routing.rollout.config.version(),
        "prices": routing.prices.currency,
        "flags": [f.name for f in routing.policy.flags],
        "profiles": routing.limits(Profile.LATENCY).max_rerank_depth,
        "budgets": routing.budgets.policy.soft_fraction,
        "fallback": routing.ledger.fallback.policy.min_samples,
        "sampler": routing.policy.sampler.rate,
        "bandit": routing.learner.bandit.alpha,
    }


@pytest.fixture
def watched(settings: Settings, tmp_path: Path) -> tuple[QueryRouting, Path]:
    path = tmp_path / "rollout.toml"
    path.write_text(OLD)
    return QueryRouting(settings.model_copy(update={"rollout_config": path}), reranker_available=False), path


@pytest.mark.anyio
async def test_a_config_the_budget_policy_refuses_changes_no_part(watched: tuple[QueryRouting, Path]) -> None:
    routing, path = watched
    before = parts(routing)
    path.write_text(NEW.format(soft=0))  # soft_fraction 0: no budget policy can be built from it
    applied = await routing.rollout.watcher.check_now()
    assert parts(routing) == before
    assert not applied
    assert "budgets.soft_fraction" in str(routing.rollout.watcher.status()["errors"])


@pytest.mark.anyio
async def test_a_good_reload_switches_every_part(watched: tuple[QueryRouting, Path]) -> None:
    routing, path = watched
    path.write_text(NEW.format(soft=0.5))
    assert await routing.rollout.watcher.check_now()
    assert parts(routing) | {"version": None} == {
        "version": None,
        "prices": "EUR",
        "flags": ["multi_query"],
        "profiles": 7,
        "budgets": 0.5,
        "fallback": 7,
        "sampler": 0.3,
        "bandit": 0.9,
    }


def fail_profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: RolloutConfig, profile: Profile) -> None:
        raise ValueError("profile limits broken")

    monkeypatch.setattr(RolloutConfig, "profile_limits", broken)


def fail_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: FallbackSection, *, timeout_s: float) -> None:
        raise ValueError("fallback policy broken")

    monkeypatch.setattr(FallbackSection, "policy", broken)


def fail_sampler(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(rate: float) -> None:
        raise ValueError("shadow sampler broken")

    monkeypatch.setattr(policy_module, "ShadowSampler", broken)


@pytest.mark.anyio
@pytest.mark.parametrize("fail", [fail_profiles, fail_fallback, fail_sampler], ids=lambda f: f.__name__)
async def test_a_part_that_cannot_be_built_leaves_every_part_on_the_old_version(
    watched: tuple[QueryRouting, Path], monkeypatch: pytest.MonkeyPatch, fail: object
) -> None:
    routing, path = watched
    before = parts(routing)
    fail(monkeypatch)  # type: ignore[operator]
    errors = background_errors("rollout_config")
    path.write_text(NEW.format(soft=0.5))
    assert await routing.rollout.watcher.check_now() is False
    assert parts(routing) == before
    assert "broken" in (routing.rollout.watcher.last_error or "")
    assert background_errors("rollout_config") == errors + 1
