"""The router: features, profile, budget and flags → a plan; adaptive rerank depth."""

from __future__ import annotations

from dataclasses import replace

from rag.config import Settings
from rag.retrieval.plan import PipelineName, plan_for
from rag.rollout.config import PROFILE_DEFAULTS, Profile, ProfileLimits
from rag.routing.analyzer import QueryAnalyzer
from rag.routing.budgets import BudgetLevel, BudgetState
from rag.routing.router import SOFT_BUDGET_DEPTH, Arm, Flag, RouteInputs, Router, fit
from rag.text.analyzer import Analyzer

QA = QueryAnalyzer(Analyzer())


def features(text: str):  # type: ignore[no-untyped-def]
    return QA.analyze(text, lambda term: 6.0)


def inputs(
    text: str = "vitamin D deficiency and rickets in children",
    profile: Profile = Profile.BALANCED,
    **kw: object,
) -> RouteInputs:
    base: dict[str, object] = {"limits": PROFILE_DEFAULTS[profile], "budget": BudgetState.unlimited()}
    base.update(kw)
    return RouteInputs(features(text), **base)  # type: ignore[arg-type]


def test_default_plan_is_hybrid_with_a_gated_rerank(settings: Settings) -> None:
    routed = Router(settings, reranker_available=True).route(inputs())
    assert routed.arm is Arm.GATED and routed.policy == "rules"
    assert routed.plan.retrievers == ("bm25", "dense")
    assert routed.plan.rerank_depth == settings.rerank_depth and routed.plan.rerank_gate == 0.6


def test_without_a_reranker_no_rerank_arm(settings: Settings) -> None:
    routed = Router(settings, reranker_available=False).route(inputs())
    assert routed.arm is Arm.HYBRID and routed.plan.rerank_depth == 0


def test_several_questions_go_multi_query_unless_the_profile_or_flag_forbids(settings: Settings) -> None:
    router = Router(settings, reranker_available=True)
    contrast = "vitamin D deficiency causes rickets whereas calcium excess causes kidney stones"
    assert router.route(inputs(contrast)).arm is Arm.GATED  # one claim with a contrast: not decomposed
    text = "what causes rickets in children? how is kidney stone risk treated?"
    assert router.route(inputs(text)).arm is Arm.MULTI
    assert router.route(inputs(text)).plan.multi_query
    assert router.route(inputs(text, profile=Profile.LATENCY)).arm is not Arm.MULTI
    assert router.route(inputs(text, flags={Flag.MULTI_QUERY: "control"})).arm is not Arm.MULTI


def test_adaptive_rerank_flag_control_keeps_the_fixed_depth(settings: Settings) -> None:
    routed = Router(settings, reranker_available=True).route(inputs(flags={Flag.ADAPTIVE_RERANK: "control"}))
    assert routed.arm is Arm.RERANK and routed.plan.rerank_gate is None


def test_profiles_cap_the_plan(settings: Settings) -> None:
    router = Router(settings, reranker_available=True)
    latency = router.route(inputs(profile=Profile.LATENCY)).plan
    assert latency.rerank_depth == 20 and latency.dims == 64 and latency.candidates == 50
    cost = router.route(inputs(profile=Profile.COST))
    assert cost.plan.rerank_depth == 0 and cost.arm is Arm.HYBRID
    custom = ProfileLimits(max_rerank_depth=5)
    assert router.route(inputs(limits=custom)).plan.rerank_depth == 5


def test_plan_for_builds_the_defaults_only_whatever_the_deployments_profile(settings: Settings) -> None:
    latency = settings.model_copy(update={"profile": Profile.LATENCY})
    plan = plan_for(PipelineName.HYBRID_RERANK, latency, reranker_available=True)
    assert (plan.rerank_depth, plan.candidates, plan.dims) == (
        settings.rerank_depth,
        settings.candidates,
        settings.dense_dims,
    )


def test_fit_applies_the_profile_then_the_budget(settings: Settings) -> None:
    plan = plan_for(PipelineName.HYBRID_RERANK, settings, reranker_available=True).with_(multi_query=True)
    soft = BudgetState(BudgetLevel.SOFT, 0.9, "tenant", 0.9, 1.0, "cheap_plan")
    capped, reasons = fit(plan, ProfileLimits(max_rerank_depth=30, max_candidates=80), soft)
    assert (capped.rerank_depth, capped.candidates, capped.multi_query) == (SOFT_BUDGET_DEPTH, 80, False)
    assert reasons == ("90% of the tenant budget spent: cheaper plan",)
    shallow, _ = fit(plan, ProfileLimits(max_rerank_depth=5), soft)
    assert shallow.rerank_depth == 5  # the budget never deepens what the profile capped
    assert fit(plan, ProfileLimits(), BudgetState.unlimited()) == (plan, ())


def test_budget_pressure_makes_plans_cheaper(settings: Settings) -> None:
    router = Router(settings, reranker_available=True)
    soft = BudgetState(BudgetLevel.SOFT, 0.9, "tenant", 0.9, 1.0, "cheap_plan")
    routed = router.route(inputs(budget=soft))
    assert routed.plan.rerank_depth == 10 and any("budget" in r for r in routed.reasons)
    over = BudgetState(BudgetLevel.OVER, 1.2, "global", 12.0, 10.0, "cheap_plan")
    cheap = router.route(inputs(budget=over)).plan
    assert cheap.retrievers == ("bm25",) and cheap.rerank_depth == 0 and not cheap.multi_query


def test_bandit_chooser_picks_among_allowed_arms(settings: Settings) -> None:
    offered: list[tuple[Arm, ...]] = []
    tenants: list[str] = []

    def chooser(tenant: str, x: list[float], allowed: tuple[Arm, ...]) -> tuple[Arm, float]:
        tenants.append(tenant)
        offered.append(allowed)
        return Arm.BM25, 0.25

    router = Router(settings, reranker_available=True, chooser=chooser)
    routed = router.route(replace(inputs(profile=Profile.COST), tenant="acme"), bandit=True)
    assert routed.policy == "bandit" and routed.arm is Arm.BM25 and routed.propensity == 0.25
    assert tenants == ["acme"]  # the bandit routes each tenant with its own model
    assert Arm.RERANK not in offered[0] and Arm.MULTI not in offered[0]  # the cost profile has no rerank
    assert router.route(inputs()).policy == "rules"  # the deployment's policy is rules
    assert router.route(inputs(flags={Flag.BANDIT: "control"}), bandit=True).policy == "rules"
    assert router.route(inputs(flags={Flag.BANDIT: "on"})).policy == "bandit"  # the flag's unit is in


def test_dims_per_query_only_with_a_qdrant_server(settings: Settings) -> None:
    local = Router(settings, reranker_available=True).route(inputs()).plan
    assert local.dims is None
    server = settings.model_copy(update={"qdrant_url": "http://qdrant:6333"})
    planned = Router(server, reranker_available=True).route(inputs()).plan
    assert planned.dims in (64, 128) and planned.rescore


def test_multi_query_without_a_reranker_plans_no_rerank(settings: Settings) -> None:
    routed = Router(settings, reranker_available=False).route(
        inputs("what causes rickets? how is it treated?")
    )
    assert routed.arm is Arm.MULTI and routed.plan.multi_query and routed.plan.rerank_depth == 0
