"""Planning: a request → a :class:`RoutingDecision` (its plan and why) before any retrieval.

Owns the query analyzer with its feature memo and the router. A decision reads one serving routing policy
(flags, the request's profile limits, the router policy) and the ledger's budget state and fallback trips;
the plan itself comes from :class:`rag.routing.router.Router` (the one place its caps are applied).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rag import metrics
from rag.candidates import CANDIDATE_FLAG
from rag.fusion import FusionChoice
from rag.retrieval.plan import QueryPlan
from rag.rollout.config import Profile
from rag.rollout.flags import CONTROL, Assignment, assign_all
from rag.rollout.policy import RoutingPolicy
from rag.routing.analyzer import QueryAnalyzer, QueryFeatures
from rag.routing.budgets import BudgetState
from rag.routing.router import ArmChooser, Routed, RouteInputs, Router, RouterSettings
from rag.service.ledger import CostLedger
from rag.text.analyzer import Analyzer

IdfLookup = Callable[[str], float | None]
FEATURE_MEMO_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class RoutingDecision:
    """How one request is served, before retrieval."""

    features: QueryFeatures
    routed: Routed
    budget: BudgetState
    profile: Profile
    variants: dict[str, str]  # flag → variant actually served (after auto-fallback)
    fallen_back: tuple[str, ...] = ()  # flags whose candidate path is tripped for this tenant
    candidate_flags: tuple[str, ...] = field(default=())  # flags on a non-control variant (watched)
    tenant: str = ""
    fusion: FusionChoice | None = None  # the serving version's tuned fusion, for the shadow plan too

    @property
    def plan(self) -> QueryPlan:
        return self.routed.plan

    def plan_dict(self) -> dict[str, Any]:
        """What the response's ``plan`` shows besides the plan itself."""
        return {
            "profile": self.profile.value,
            "router": self.routed.as_dict(),
            "features": self.features.as_dict(),
            "budget": self.budget.as_dict(),
            "variants": dict(self.variants),
            **({"fallback": list(self.fallen_back)} if self.fallen_back else {}),
        }


class Planner:
    def __init__(
        self,
        settings: RouterSettings,
        policy: Callable[[], RoutingPolicy],
        ledger: CostLedger,
        *,
        reranker_available: bool,
        chooser: ArmChooser | None = None,
    ) -> None:
        """``policy``: the serving routing policy (read once per decision); ``chooser``: the bandit's."""
        self._policy = policy
        self._ledger = ledger
        self.analyzer = QueryAnalyzer(Analyzer())
        self.router = Router(settings, reranker_available=reranker_available, chooser=chooser)
        self._feature_memo: OrderedDict[tuple[str, str, str], QueryFeatures] = OrderedDict()

    def decide(
        self,
        tenant: str,
        text: str,
        *,
        idf: IdfLookup,
        profile: Profile,
        top_k: int,
        session_id: str | None = None,
        version: str = "",
        features: QueryFeatures | None = None,
        fusion: FusionChoice | None = None,
    ) -> RoutingDecision:
        """The plan for one request. ``idf`` is the IDF over ``tenant``'s own documents
        (:func:`rag.routing.vocabulary.tenant_idf`): features, and every choice made from them, then show
        nothing of other tenants' vocabulary. ``features`` are the query's, when the caller analysed it
        already (off the event loop: :meth:`analyze`); ``fusion``: the serving version's tuned choice
        (:attr:`rag.index.snapshot.IndexSnapshot.tuning`). Raises :class:`OverBudgetError` for a tenant past
        a hard budget whose action is ``reject``."""
        budget = self._ledger.admit(tenant)
        policy = self._policy()  # one policy for the whole decision, even if a reload lands now
        variants, fallen_back, candidates = self._variants(policy, tenant, session_id)
        features = self._features_of(tenant, text, idf, version, features)
        inputs = RouteInputs(features, policy.limits(profile), budget, top_k, variants, tenant, fusion)
        routed = self.router.route(inputs, bandit=policy.router.policy == "bandit")
        metrics.ROUTER_DECISIONS.labels(routed.arm.value, routed.policy, features.complexity.value).inc()
        return RoutingDecision(
            features, routed, budget, profile, variants, fallen_back, candidates, tenant, fusion
        )

    def needs_analysis(self, tenant: str, text: str, version: str) -> bool:
        """Whether :meth:`decide` would analyse ``text`` (no memoised features): a caller on the event
        loop analyses a long one in a worker thread first (:meth:`analyze`)."""
        return (version, tenant, text) not in self._feature_memo

    def analyze(self, text: str, idf: IdfLookup) -> QueryFeatures:
        """The query's features; touches no routing state, so any thread may call it."""
        return self.analyzer.analyze(text, idf)

    def shadow_plan(self, decision: RoutingDecision, request_id: str) -> tuple[str, QueryPlan] | None:
        """The candidate plan to shadow this request with, or None: not sampled, no candidate
        configured, the request already on the candidate, or a candidate that plans the same. The flag
        ``candidate_index`` shadows the served plan itself, on the staged candidate collection."""
        policy = self._policy()
        flag = policy.config.shadow.candidate
        if (
            flag is None
            or not policy.sampler.sampled(request_id)
            or decision.variants.get(flag, CONTROL) != CONTROL
        ):
            return None
        routed = decision.routed
        if flag == CANDIDATE_FLAG:  # the staged candidate collection answers the same plan (rag.candidates)
            return flag, routed.plan
        spec = policy.config.flag(flag)
        variant = spec.first_variant if spec is not None else "on"
        inputs = RouteInputs(
            decision.features,
            policy.limits(decision.profile),
            decision.budget,
            routed.plan.top_k,
            {**decision.variants, flag: variant},
            decision.tenant,
            decision.fusion,
        )
        candidate = self.router.route(inputs).plan
        if candidate == routed.plan:
            metrics.SHADOW_RUNS.labels(flag, "same_plan").inc()
            return None
        return flag, candidate

    def _features_of(
        self, tenant: str, text: str, idf: IdfLookup, version: str, given: QueryFeatures | None = None
    ) -> QueryFeatures:
        """The query's features, memoised per index version and tenant (they depend only on the text and
        the tenant's vocabulary in that version): a repeated query, the cache path, skips the analysis.
        The tenant is part of the key: features computed for one tenant are never served to another."""
        key = (version, tenant, text)
        features = self._feature_memo.get(key)
        if features is None:
            features = given if given is not None else self.analyzer.analyze(text, idf)
            self._feature_memo[key] = features
            if len(self._feature_memo) > FEATURE_MEMO_ENTRIES:
                self._feature_memo.popitem(last=False)
        else:
            self._feature_memo.move_to_end(key)
        return features

    def _variants(
        self, policy: RoutingPolicy, tenant: str, session_id: str | None
    ) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
        """Each flag's variant for this request: its assignment, or ``control`` where the candidate path
        fell back for this tenant; and which flags fell back, and which run a candidate (to be watched)."""
        assignments: Mapping[str, Assignment] = assign_all(policy.flags, tenant, session_id)
        variants: dict[str, str] = {}
        fallen_back: list[str] = []
        candidates: list[str] = []
        for name, a in assignments.items():
            variant = a.variant
            if a.on and self._ledger.fallback.is_tripped((tenant, name)):
                variant = CONTROL
                fallen_back.append(name)
            elif a.on:
                candidates.append(name)
            variants[name] = variant
            metrics.ROLLOUT_ASSIGNMENTS.labels(name, variant).inc()
        return variants, tuple(fallen_back), tuple(candidates)
