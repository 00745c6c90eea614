"""Profile caps: the request's profile, with the rollout config's overrides, is the one applied to a plan
(never the deployment's profile with the built-in limits underneath it)."""

from __future__ import annotations

from rag.config import Settings
from rag.rollout.config import Profile, RolloutConfig
from rag.service.routing import QueryRouting

TEXT = "vitamin D deficiency and rickets in children"
OVERRIDE = "[profiles.latency]\nmax_rerank_depth = 30\nmax_candidates = 80\n"


def latency_deployment(settings: Settings, config: str = "") -> QueryRouting:
    deployment = settings.model_copy(update={"profile": Profile.LATENCY})  # RAG_PROFILE=latency
    return QueryRouting(deployment, reranker_available=True, config=RolloutConfig.parse_text(config, "toml"))


def test_a_rollout_override_of_the_deployment_profile_applies(settings: Settings) -> None:
    routing = latency_deployment(settings, OVERRIDE)
    plan = routing.planner.decide("acme", TEXT, idf=lambda t: 6.0, profile=Profile.LATENCY, top_k=10).plan
    assert (plan.rerank_depth, plan.candidates) == (30, 80)


def test_a_request_profile_gets_its_own_caps_not_the_deployments(settings: Settings) -> None:
    routing = latency_deployment(settings, OVERRIDE)
    plan = routing.planner.decide("acme", TEXT, idf=lambda t: 6.0, profile=Profile.BALANCED, top_k=10).plan
    assert (plan.rerank_depth, plan.candidates, plan.dims) == (
        settings.rerank_depth,
        settings.candidates,
        settings.dense_dims,
    )
