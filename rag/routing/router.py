"""The cost-aware router: (query features, profile, budget state, flags, bandit) → a :class:`QueryPlan`.

A plan starts from an *arm*, a named plan template (BM25 only, hybrid, hybrid with a gated rerank, hybrid
with a full rerank, multi-query). The rules policy picks the arm from the features; the bandit policy (a
LinUCB over the same arms, when enabled) learns it from feedback. The arm's plan is then fitted to the
profile's limits and to the budget: cheaper as spend nears the budget, the cheap plan past it. Every
choice is recorded in ``reasons`` and shown in the response's ``plan``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from rag.config import Settings
from rag.retrieval.plan import (
    PROFILE_LIMITS,
    PipelineName,
    Profile,
    ProfileLimits,
    QueryPlan,
    apply_profile,
    plan_for,
)
from rag.routing.analyzer import QueryFeatures
from rag.routing.budgets import BudgetLevel, BudgetState

CONTROL = "control"  # the variant of a flag that keeps the baseline behaviour


class Arm(StrEnum):
    BM25 = "bm25"
    HYBRID = "hybrid"
    GATED = "hybrid-gated"  # hybrid; rerank only where BM25 and dense agree (adaptive depth)
    RERANK = "hybrid-rerank"  # hybrid; rerank the top rerank_depth
    MULTI = "multi-query"  # sub-queries + PRF expansion, fused; gated rerank


ARMS: tuple[Arm, ...] = tuple(Arm)


class Flag(StrEnum):
    """Flags the router reads (configured in the rollout config; absent = the router's default)."""

    ADAPTIVE_RERANK = "adaptive_rerank"  # control: rerank to the fixed depth on every query
    MULTI_QUERY = "multi_query"  # control: never multi-query
    BANDIT = "bandit"  # on: the bandit picks the arm; control: the rules do


@dataclass(frozen=True, slots=True)
class RouteInputs:
    features: QueryFeatures
    profile: Profile
    budget: BudgetState
    top_k: int = 10
    flags: Mapping[str, str] = field(default_factory=dict)  # flag name → variant
    limits: ProfileLimits | None = None  # the profile's limits when overridden by the rollout config
    tenant: str = ""  # whose query: the bandit routes each tenant with its own model (rag.bandit.tenants)


@dataclass(frozen=True, slots=True)
class Routed:
    plan: QueryPlan
    arm: Arm
    policy: str  # "rules" or "bandit"
    reasons: tuple[str, ...]
    propensity: float | None = None  # the bandit's probability of this arm (for offline replay)

    def as_dict(self) -> dict[str, object]:
        return {
            "arm": self.arm.value,
            "policy": self.policy,
            "reasons": list(self.reasons),
            **({"propensity": round(self.propensity, 4)} if self.propensity is not None else {}),
        }


@dataclass(frozen=True, slots=True)
class RouterConfig:
    """The rules policy's thresholds (defaults chosen on SciFact *train* queries; see the README)."""

    rerank_gate: float | None = 0.6  # rerank when BM25 and dense share at least this much of their top 10
    easy_difficulty: float = 0.2  # below: a rare anchor term carries the query (cheaper dense search)
    soft_budget_depth: int = 10  # rerank depth cap when spend is past the soft fraction


# the bandit's chooser: (tenant, feature vector, allowed arms) → (arm, propensity)
ArmChooser = Callable[[str, list[float], tuple[Arm, ...]], tuple[Arm, float]]


class Router:
    def __init__(
        self,
        settings: Settings,
        *,
        reranker_available: bool,
        config: RouterConfig | None = None,
        chooser: ArmChooser | None = None,
    ) -> None:
        self.settings = settings
        self.reranker_available = reranker_available
        self.config = config or RouterConfig(rerank_gate=settings.router_rerank_gate)
        self.chooser = chooser
        # dims per query only pays where the low-d prefetch is an index of its own (a Qdrant server);
        # in local mode the funnel measured slower than a full-dim search (README, Matryoshka)
        self.dims_per_query = settings.router_dims == "always" or (
            settings.router_dims == "auto" and settings.qdrant_url is not None
        )

    def allowed_arms(self, inputs: RouteInputs) -> tuple[Arm, ...]:
        limits = inputs.limits or PROFILE_LIMITS[inputs.profile]
        arms = list(ARMS)
        if not self.reranker_available or limits.max_rerank_depth == 0:
            arms = [a for a in arms if a not in (Arm.GATED, Arm.RERANK)]
        if not limits.multi_query or inputs.flags.get(Flag.MULTI_QUERY) == CONTROL:
            arms.remove(Arm.MULTI)
        return tuple(arms)

    def route(self, inputs: RouteInputs, *, bandit: bool = False) -> Routed:
        """The plan for one query: the bandit picks the arm when ``bandit`` (the deployment's policy)
        and the ``bandit`` flag, where configured, is not ``control`` for this unit; else the rules."""
        reasons: list[str] = []
        allowed = self.allowed_arms(inputs)
        policy, propensity = "rules", None
        flag = inputs.flags.get(Flag.BANDIT)
        if flag is not None:
            bandit = flag != CONTROL
        if bandit and self.chooser is not None:
            arm, propensity = self.chooser(inputs.tenant, inputs.features.vector(), allowed)
            policy = "bandit"
            reasons.append(f"bandit chose {arm.value} (p={propensity:.2f})")
        else:
            arm = self._rules_arm(inputs, allowed, reasons)
        plan = self._arm_plan(arm, inputs, reasons)
        plan = self._fit_budget(plan, inputs.budget, reasons)
        return Routed(plan, arm, policy, tuple(reasons), propensity)

    # -- the rules policy ----------------------------------------------------------------------------
    def _rules_arm(self, inputs: RouteInputs, allowed: tuple[Arm, ...], reasons: list[str]) -> Arm:
        f = inputs.features
        # decomposition pays on several questions in one query; on single claims with a contrast
        # ("X compared to Y") it lost nDCG on SciFact (benchmarks/results/multiquery.md)
        if Arm.MULTI in allowed and f.sub_questions > 1:
            reasons.append(f"{f.sub_questions} questions in one: multi-query")
            return Arm.MULTI
        if Arm.GATED in allowed:
            if inputs.flags.get(Flag.ADAPTIVE_RERANK) == CONTROL:
                reasons.append("adaptive_rerank flag: control (fixed depth)")
                return Arm.RERANK
            return Arm.GATED
        if f.terms == 0:
            reasons.append("no index terms: dense carries it")
        return Arm.HYBRID

    # -- from an arm to a plan -----------------------------------------------------------------------
    def _arm_plan(self, arm: Arm, inputs: RouteInputs, reasons: list[str]) -> QueryPlan:
        settings, f = self.settings, inputs.features
        pipeline = {
            Arm.BM25: PipelineName.BM25,
            Arm.HYBRID: PipelineName.HYBRID,
            Arm.GATED: PipelineName.HYBRID_RERANK,
            Arm.RERANK: PipelineName.HYBRID_RERANK,
            Arm.MULTI: PipelineName.HYBRID_RERANK if self.reranker_available else PipelineName.HYBRID,
        }[arm]
        plan = plan_for(
            pipeline, settings, top_k=inputs.top_k, reranker_available=self.reranker_available, profile=None
        )
        changes: dict[str, object] = {}
        if arm in (Arm.GATED, Arm.MULTI) and plan.rerank_depth > 0:
            changes["rerank_gate"] = self.config.rerank_gate
        if arm is Arm.MULTI:
            changes["multi_query"] = True
        if self.dims_per_query and "dense" in plan.retrievers and plan.dims is None:
            if f.difficulty < self.config.easy_difficulty:
                changes.update(dims=64, rescore=True)
                reasons.append(f"difficulty {f.difficulty:.2f}: 64-d prefetch, full rescore")
            else:
                changes.update(dims=128, rescore=True)
        plan = plan.with_(**changes) if changes else plan
        return apply_profile(plan, inputs.profile, inputs.limits)

    def _fit_budget(self, plan: QueryPlan, budget: BudgetState, reasons: list[str]) -> QueryPlan:
        if budget.level is BudgetLevel.OVER:  # (a "reject" budget never reaches the router)
            reasons.append(f"over the {budget.scope} budget: cheap plan (BM25 only)")
            return plan.with_(
                retrievers=("bm25",), rerank_depth=0, rerank_gate=None, multi_query=False, dims=None
            )
        if budget.level is BudgetLevel.SOFT:
            changes: dict[str, object] = {"multi_query": False}
            if plan.rerank_depth > self.config.soft_budget_depth:
                changes["rerank_depth"] = self.config.soft_budget_depth
            reasons.append(f"{budget.pressure:.0%} of the {budget.scope} budget spent: cheaper plan")
            return plan.with_(**changes)
        return plan
