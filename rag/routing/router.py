"""The cost-aware router: (query features, profile limits, budget state, flags, bandit) → a
:class:`QueryPlan`. Where a plan's rerank depth (and every other cap) is decided:

1. :func:`rag.retrieval.plan.plan_for` — the arm's pipeline with the configured defaults
   (``RAG_RERANK_DEPTH``, ``RAG_CANDIDATES``…), nothing else;
2. the *arm* (here), a named plan template: BM25 only, hybrid, hybrid with a gated rerank, hybrid with a
   full rerank, multi-query. The rules policy picks it from the features; the bandit policy (a LinUCB over
   the same arms, when enabled) learns it from feedback;
3. :func:`fit` (here), the one function that caps a plan: the profile's limits (the rollout config's
   ``[profiles.<name>]`` over :data:`rag.rollout.config.PROFILE_DEFAULTS`), then the budget — cheaper as
   spend nears it (:data:`SOFT_BUDGET_DEPTH`), the cheap plan past it.

At run time the pipeline may rerank fewer than planned: its adaptive gate (none where BM25 and dense
disagree) and the deadline. Every choice here is recorded in ``reasons`` and shown in the response's
``plan``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from rag.fusion import FusionChoice
from rag.retrieval.plan import PipelineName, PlanSettings, QueryPlan, plan_for
from rag.rollout.config import ProfileLimits
from rag.rollout.flags import CONTROL
from rag.routing.analyzer import QueryFeatures
from rag.routing.budgets import BudgetLevel, BudgetState

# Code defaults, not knobs (the rules' thresholds were chosen on SciFact *train* queries; see the README).
# The rerank depth cap once spend is past a budget's soft fraction: a quarter of the default depth (40).
SOFT_BUDGET_DEPTH = 10
# Below this difficulty a rare anchor term carries the query: a 64-d prefetch (dims per query), else 128.
EASY_DIFFICULTY = 0.2


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
    limits: ProfileLimits  # the request's profile, as the serving rollout config has it
    budget: BudgetState
    top_k: int = 10
    flags: Mapping[str, str] = field(default_factory=dict)  # flag name → variant
    tenant: str = ""  # whose query: the bandit routes each tenant with its own model (rag.bandit.tenants)
    fusion: FusionChoice | None = None  # the serving version's tuned fusion (None: the configured one)


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


class RouterSettings(PlanSettings, Protocol):
    """The per-process settings the router reads (``rag.config.Settings`` has them)."""

    @property
    def router_rerank_gate(self) -> float | None: ...  # RAG_ROUTER_RERANK_GATE (chosen on SciFact train)
    @property
    def router_dims(self) -> str: ...  # RAG_ROUTER_DIMS: auto, always, never
    @property
    def qdrant_url(self) -> str | None: ...


# the bandit's chooser: (tenant, feature vector, allowed arms) → (arm, propensity)
ArmChooser = Callable[[str, list[float], tuple[Arm, ...]], tuple[Arm, float]]


class Router:
    def __init__(
        self, settings: RouterSettings, *, reranker_available: bool, chooser: ArmChooser | None = None
    ) -> None:
        self.settings = settings
        self.reranker_available = reranker_available
        self.rerank_gate = settings.router_rerank_gate  # share of the top 10 BM25 and dense must agree on
        self.chooser = chooser
        # dims per query only pays where the low-d prefetch is an index of its own (a Qdrant server);
        # in local mode the funnel measured slower than a full-dim search (README, Matryoshka)
        self.dims_per_query = settings.router_dims == "always" or (
            settings.router_dims == "auto" and settings.qdrant_url is not None
        )

    def allowed_arms(self, inputs: RouteInputs) -> tuple[Arm, ...]:
        limits = inputs.limits
        arms = list(ARMS)
        if not self.reranker_available or limits.max_rerank_depth == 0:
            arms = [a for a in arms if a not in (Arm.GATED, Arm.RERANK)]
        if not limits.allows_multi_query or inputs.flags.get(Flag.MULTI_QUERY) == CONTROL:
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
        plan, fitted = fit(self._arm_plan(arm, inputs, reasons), inputs.limits, inputs.budget)
        return Routed(plan, arm, policy, (*reasons, *fitted), propensity)

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
            pipeline,
            settings,
            top_k=inputs.top_k,
            reranker_available=self.reranker_available,
            fusion=inputs.fusion,
        )
        changes: dict[str, object] = {}
        if arm in (Arm.GATED, Arm.MULTI) and plan.rerank_depth > 0:
            changes["rerank_gate"] = self.rerank_gate
        if arm is Arm.MULTI:
            changes["multi_query"] = True
        if self.dims_per_query and "dense" in plan.retrievers and plan.dims is None:
            if f.difficulty < EASY_DIFFICULTY:
                changes.update(dims=64, rescore=True)
                reasons.append(f"difficulty {f.difficulty:.2f}: 64-d prefetch, full rescore")
            else:
                changes.update(dims=128, rescore=True)
        return plan.with_(**changes) if changes else plan


# -- the caps: profile, then budget ----------------------------------------------------------------------
def fit(plan: QueryPlan, limits: ProfileLimits, budget: BudgetState) -> tuple[QueryPlan, tuple[str, ...]]:
    """``plan`` within its caps, and why it changed: first the profile's ``limits`` (fewer candidates, a
    lower prefetch dimension, a shallower rerank, no multi-query), then the budget (past its soft
    fraction: no multi-query, a rerank of at most :data:`SOFT_BUDGET_DEPTH`; over it: the cheap plan,
    BM25 only — a "reject" budget never reaches the router). The one place a plan meets its caps."""
    plan = _apply_limits(plan, limits)
    if budget.level is BudgetLevel.OVER:
        cheap = plan.with_(
            retrievers=("bm25",), rerank_depth=0, rerank_gate=None, multi_query=False, dims=None
        )
        return cheap, (f"over the {budget.scope} budget: cheap plan (BM25 only)",)
    if budget.level is BudgetLevel.SOFT:
        changes: dict[str, object] = {"multi_query": False}
        if plan.rerank_depth > SOFT_BUDGET_DEPTH:
            changes["rerank_depth"] = SOFT_BUDGET_DEPTH
        return plan.with_(**changes), (
            f"{budget.pressure:.0%} of the {budget.scope} budget spent: cheaper plan",
        )
    return plan, ()


def _apply_limits(plan: QueryPlan, limits: ProfileLimits) -> QueryPlan:
    """``plan`` within a profile's ``limits`` (a field left None caps nothing)."""
    changes: dict[str, object] = {}
    if limits.max_candidates is not None and plan.candidates > limits.max_candidates:
        changes["candidates"] = max(limits.max_candidates, plan.top_k)
    if (
        limits.dims is not None
        and "dense" in plan.retrievers
        and (plan.dims is None or plan.dims > limits.dims)
    ):
        changes.update(dims=limits.dims, rescore=True)
    if limits.max_rerank_depth is not None and plan.rerank_depth > limits.max_rerank_depth:
        changes["rerank_depth"] = limits.max_rerank_depth
    if plan.multi_query and not limits.allows_multi_query:
        changes["multi_query"] = False
    return plan.with_(**changes) if changes else plan


def deployment_plan(
    pipeline: PipelineName,
    settings: PlanSettings,
    limits: ProfileLimits,
    *,
    top_k: int = 10,
    reranker_available: bool,
    fusion: FusionChoice | None = None,
) -> QueryPlan:
    """A named pipeline's plan as the deployment serves it, without a budget: the defaults
    (:func:`plan_for`, with the serving version's tuned ``fusion``) within the deployment profile's
    ``limits``. For ``rag eval`` and ``rag query``."""
    plan = plan_for(pipeline, settings, top_k=top_k, reranker_available=reranker_available, fusion=fusion)
    return fit(plan, limits, BudgetState.unlimited())[0]
