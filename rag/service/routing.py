"""The service's routing state: analyzer, router, budgets, cost model, flags, auto-fallback, shadow
sampling, the bandit and its decisions, all driven by the hot-reloaded rollout config.

:meth:`QueryRouting.decide` turns a request into a plan before any retrieval; :meth:`QueryRouting.settle`
books what the answer cost and how the candidate path did; :meth:`QueryRouting.feedback` turns a user's
feedback into a bandit update. Transport-free, like the rest of ``rag.service``.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from rag import metrics
from rag.bandit.decisions import DecisionLog
from rag.bandit.reward import feedback_reward, net_reward
from rag.bandit.store import BanditStore, FileStore, RedisStore
from rag.bandit.tenants import TenantBandits
from rag.config import Settings
from rag.resilience.guarded_redis import GuardedRedis
from rag.retrieval.plan import Profile, ProfileLimits, QueryPlan, profile_limits
from rag.rollout.config import Format, Prices, RolloutConfig
from rag.rollout.fallback import AutoFallback, FallbackEvent
from rag.rollout.flags import Assignment, assign_all
from rag.rollout.shadow import ShadowComparison, ShadowSampler, compare
from rag.rollout.watcher import REDIS_KEY, ConfigWatcher
from rag.routing.analyzer import FEATURE_NAMES, QueryAnalyzer, QueryFeatures
from rag.routing.budgets import BudgetLevel, BudgetPolicy, Budgets, BudgetState, OverBudgetError, TenantBudget
from rag.routing.costs import CpuCosts, QueryCost, Usage, query_cost
from rag.routing.router import ARMS, CONTROL, Arm, Routed, RouteInputs, Router
from rag.routing.shared_spend import SharedSpend
from rag.text.analyzer import Analyzer

log = logging.getLogger(__name__)

IdfLookup = Callable[[str], float | None]


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


class QueryRouting:
    def __init__(
        self,
        settings: Settings,
        *,
        reranker_available: bool,
        config: RolloutConfig | None = None,
        bandit_store: BanditStore | None = None,
        decision_log: Path | None = None,
        seed: int | None = None,
    ) -> None:
        self.settings = settings
        initial = config or load_rollout_config(settings.rollout_config)
        self.watcher = ConfigWatcher(initial, path=settings.rollout_config)
        self.analyzer = QueryAnalyzer(Analyzer())
        self.cpu = CpuCosts()
        self.cpu.listeners.append(lambda step, ms: metrics.STEP_CPU.labels(step).set(ms / 1000.0))
        self.budgets = Budgets(budget_policy(initial))
        self.fallback = AutoFallback(initial.fallback.policy(timeout_s=settings.deadline_ms / 1000.0))
        self.fallback.listeners.append(_fallback_metrics)
        self.sampler = ShadowSampler(initial.shadow.rate)
        self.bandit = TenantBandits(  # per tenant, plus a shared model of bounded weight
            [a.value for a in ARMS],
            len(FEATURE_NAMES),
            shared_weight=settings.bandit_shared_weight,
            alpha=initial.router.bandit_alpha,
            epsilon=initial.router.bandit_epsilon,
        )
        self.bandit_store = bandit_store
        self.decisions = DecisionLog(log_path=decision_log)
        self._rng = np.random.default_rng(seed)
        self._updates_since_save = 0
        self._redis: GuardedRedis | None = None
        self.shared_spend: SharedSpend | None = None
        self._feature_memo: OrderedDict[tuple[str, str, str], QueryFeatures] = OrderedDict()
        self.router = Router(settings, reranker_available=reranker_available, chooser=self._choose)
        self.watcher.listeners.append(self._on_config)
        self.watcher.listeners.append(lambda _: metrics.CONFIG_RELOADS.labels("reloaded").inc())
        self._on_config(initial)

    # -- configuration -------------------------------------------------------------------------------
    @property
    def config(self) -> RolloutConfig:
        return self.watcher.current

    @property
    def prices(self) -> Prices:
        return self.config.prices

    def limits(self, profile: Profile) -> ProfileLimits:
        """``profile``'s plan limits: the built-in ones with the rollout config's overrides."""
        override = self.config.profiles.get(profile.value)
        return profile_limits(profile, override.model_dump() if override is not None else None)

    def _on_config(self, config: RolloutConfig) -> None:
        self.budgets.policy = budget_policy(config)
        self.fallback.set_policy(config.fallback.policy(timeout_s=self.settings.deadline_ms / 1000.0))
        self.sampler = ShadowSampler(config.shadow.rate)
        self.bandit.alpha = config.router.bandit_alpha
        self.bandit.epsilon = config.router.bandit_epsilon
        metrics.ROLLOUT_CONFIG.clear()
        metrics.ROLLOUT_CONFIG.labels(config.version()).set(1)

    async def start(self, redis: GuardedRedis | None = None, bandit_file: Path | None = None) -> None:
        """Restore the bandit (Redis when configured, else ``bandit_file``) and watch the config (the
        file, and the Redis key :data:`rag.rollout.watcher.REDIS_KEY` when Redis is configured)."""
        if self.bandit_store is None:
            if redis is not None:
                self.bandit_store = RedisStore(redis.client, key=f"rag:bandit:{self.settings.collection}")
            elif bandit_file is not None:
                self.bandit_store = FileStore(bandit_file)
        self._redis = redis
        if redis is not None:
            guarded = redis
            self.shared_spend = SharedSpend(self.budgets.window, redis)
            self.budgets.add = self.shared_spend.add
            self.shared_spend.start()

            async def redis_get() -> bytes | str | None:
                return await guarded.run(lambda r: r.get(REDIS_KEY))

            self.watcher.redis_get = redis_get
        if self.bandit_store is not None:
            try:
                state = await self.bandit_store.load()
                if state is not None:
                    self.bandit = TenantBandits.from_state(
                        state,
                        shared_weight=self.settings.bandit_shared_weight,
                        arms=self.bandit.arms,
                        dim=self.bandit.dim,
                    )
                    self._on_config(self.config)
            except Exception as exc:  # a stale, unreadable or malformed state: learn afresh, say why
                metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
                log.warning("bandit state not restored (%s); starting from scratch", str(exc)[:500])
        self.watcher.start()

    async def close(self) -> None:
        await self.watcher.close()
        if self.shared_spend is not None:
            await self.shared_spend.close()
        await self.save_bandit()
        self.decisions.close()

    async def save_bandit(self) -> None:
        if self.bandit_store is not None and self._updates_since_save:
            try:
                await self.bandit_store.save(self.bandit.to_state())
                self._updates_since_save = 0
            except Exception as exc:  # kept in memory: saved with the next updates, or at shutdown
                metrics.BACKGROUND_ERRORS.labels(BANDIT_STORE).inc()
                log.warning("bandit state not saved: %s", str(exc)[:500])

    # -- admin ---------------------------------------------------------------------------------------
    def rollout_status(self) -> dict[str, Any]:
        return {**self.watcher.status(), "config": self.config.model_dump(mode="json")}

    async def apply_rollout(self, text: str, fmt: Format = "json") -> dict[str, Any]:
        """Validate ``text`` and apply it: through Redis (every replica) when configured, else here.
        Raises :class:`ConfigError` (the serving config stays)."""
        RolloutConfig.parse_text(text, fmt)  # refuse before anything is written
        if self._redis is not None:
            await self._redis.run(lambda r: r.set(REDIS_KEY, text))
            await self.watcher.check_now()
        else:
            self.watcher.apply_text(text, fmt, source="admin")
        metrics.CONFIG_RELOADS.labels("applied").inc()
        return self.rollout_status()

    def fallback_status(self, tenant: str | None = None) -> list[dict[str, Any]]:
        return [row for row in self.fallback.all_status() if tenant is None or row["tenant"] == tenant]

    def reset_fallback(self, tenant: str | None = None, flag: str | None = None) -> int:
        """Put tripped candidate paths back in service (all, a tenant's, a flag's, or one key)."""
        if tenant is None and flag is None:
            return self.fallback.reset_all()
        keys = [
            k
            for k in self.fallback.tracked_keys()
            if (tenant is None or k[0] == tenant) and (flag is None or k[1] == flag)
        ]
        return sum(self.fallback.reset(k) for k in keys)

    # -- per request ---------------------------------------------------------------------------------
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
    ) -> RoutingDecision:
        """The plan for one request. ``idf`` is the IDF over ``tenant``'s own documents
        (:func:`rag.routing.vocabulary.tenant_idf`): features, and every choice made from them, then show
        nothing of other tenants' vocabulary. ``features`` are the query's, when the caller analysed it
        already (off the event loop: :meth:`analyze`). Raises :class:`OverBudgetError` for a tenant past
        a hard budget whose action is ``reject``."""
        budget = self.budgets.state(tenant)
        metrics.BUDGET_PRESSURE.labels(tenant).set(
            budget.pressure if budget.pressure != float("inf") else 1e9
        )
        if budget.level is BudgetLevel.OVER and budget.action == "reject":
            metrics.BUDGET_EXCEEDED.labels(tenant, "reject").inc()
            raise OverBudgetError(tenant, budget)
        if budget.level is BudgetLevel.OVER:
            metrics.BUDGET_EXCEEDED.labels(tenant, "cheap_plan").inc()
        variants, fallen_back, candidates = self._variants(tenant, session_id)
        features = self._features_of(tenant, text, idf, version, features)
        inputs = RouteInputs(features, profile, budget, top_k, variants, self.limits(profile), tenant)
        routed = self.router.route(inputs, bandit=self.config.router.policy == "bandit")
        metrics.ROUTER_DECISIONS.labels(routed.arm.value, routed.policy, features.complexity.value).inc()
        return RoutingDecision(features, routed, budget, profile, variants, fallen_back, candidates, tenant)

    def needs_analysis(self, tenant: str, text: str, version: str) -> bool:
        """Whether :meth:`decide` would analyse ``text`` (no memoised features): a caller on the event
        loop analyses a long one in a worker thread first (:meth:`analyze`)."""
        return (version, tenant, text) not in self._feature_memo

    def analyze(self, text: str, idf: IdfLookup) -> QueryFeatures:
        """The query's features; touches no routing state, so any thread may call it."""
        return self.analyzer.analyze(text, idf)

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
        self, tenant: str, session_id: str | None
    ) -> tuple[dict[str, str], tuple[str, ...], tuple[str, ...]]:
        assignments: Mapping[str, Assignment] = assign_all(self.config.flags, tenant, session_id)
        variants: dict[str, str] = {}
        fallen_back: list[str] = []
        candidates: list[str] = []
        for name, a in assignments.items():
            variant = a.variant
            if a.on and self.fallback.is_tripped((tenant, name)):
                variant = CONTROL
                fallen_back.append(name)
            elif a.on:
                candidates.append(name)
            variants[name] = variant
            metrics.ROLLOUT_ASSIGNMENTS.labels(name, variant).inc()
        return variants, tuple(fallen_back), tuple(candidates)

    def _choose(self, tenant: str, x: list[float], allowed: tuple[Arm, ...]) -> tuple[Arm, float]:
        choice = self.bandit.choose(tenant, x, self._rng, allowed=[a.value for a in allowed])
        return Arm(choice.arm), choice.propensity

    def book(self, tenant: str, usage: Usage) -> QueryCost:
        """Price ``usage`` (the running CPU averages, the unit prices) and book it with ``tenant``: the
        cost metrics and its budget window. The one place work is charged (retrieval, synthesis)."""
        cost = query_cost(usage, self.cpu.per_unit_ms(), self.prices)
        for step, ms in cost.cpu_ms.items():
            metrics.COST_CPU.labels(step, tenant).inc(ms / 1000.0)
        for step, money in cost.money.items():
            metrics.COST_MONEY.labels(step, tenant).inc(money)
        self.budgets.record(tenant, cost.money_total)
        return cost

    def settle(
        self,
        decision: RoutingDecision,
        *,
        tenant: str,
        request_id: str,
        usage: Usage | None,
        ok: bool,
        timed_out: bool,
        latency_s: float,
        served_ids: Sequence[str],
    ) -> QueryCost | None:
        """Book one answered request: its cost (metrics, budgets), the candidate paths' outcomes
        (auto-fallback) and the routing decision (for feedback). ``usage`` None: served from cache."""
        for name in decision.candidate_flags:
            self.fallback.record((tenant, name), ok=ok, timed_out=timed_out, latency_s=latency_s)
        if usage is None:
            return None
        cost = self.book(tenant, usage)
        metrics.QUERY_COST.labels(decision.routed.arm.value).observe(cost.money_total)
        if ok and request_id:  # (a call outside HTTP has no request id: nothing can rate it)
            routed = decision.routed
            self.decisions.record(
                request_id,
                tenant,
                routed.arm.value,
                decision.features.vector(),
                routed.propensity if routed.propensity is not None else 1.0,
                served_ids,
                cost=cost.cpu_ms_total / 1000.0,  # CPU-seconds: what the reward is net of
            )
        return cost

    # -- shadow ----------------------------------------------------------------------------------------
    def shadow_plan(self, decision: RoutingDecision, request_id: str) -> tuple[str, QueryPlan] | None:
        """The candidate plan to shadow this request with, or None: not sampled, no candidate
        configured, the request already on the candidate, or a candidate that plans the same."""
        flag = self.config.shadow.candidate
        if (
            flag is None
            or not self.sampler.sampled(request_id)
            or decision.variants.get(flag, CONTROL) != CONTROL
        ):
            return None
        spec = self.config.flag(flag)
        variant = spec.first_variant if spec is not None else "on"
        routed = decision.routed
        inputs = RouteInputs(
            decision.features,
            decision.profile,
            decision.budget,
            routed.plan.top_k,
            {**decision.variants, flag: variant},
            self.limits(decision.profile),
            decision.tenant,
        )
        candidate = self.router.route(inputs).plan
        if candidate == routed.plan:
            metrics.SHADOW_RUNS.labels(flag, "same_plan").inc()
            return None
        return flag, candidate

    def record_shadow(
        self,
        flag: str,
        request_id: str,
        *,
        baseline_ids: Sequence[str],
        candidate_ids: Sequence[str],
        baseline_ms: float,
        candidate_ms: float,
        baseline_usage: Usage | None,
        candidate_usage: Usage,
    ) -> ShadowComparison:
        per_unit, prices = self.cpu.per_unit_ms(), self.prices
        base = query_cost(baseline_usage or Usage(), per_unit, prices)
        cand = query_cost(candidate_usage, per_unit, prices)
        result = compare(
            baseline_ids,
            candidate_ids,
            baseline_ms,
            candidate_ms,
            {"cpu_ms": base.cpu_ms_total, "money": base.money_total},
            {"cpu_ms": cand.cpu_ms_total, "money": cand.money_total},
        )
        metrics.SHADOW_RUNS.labels(flag, "ok").inc()
        metrics.SHADOW_OVERLAP.labels(flag).observe(result.overlap)
        metrics.SHADOW_RANK_CORR.labels(flag).observe(result.rank_corr)
        metrics.SHADOW_LATENCY_DELTA.labels(flag).observe(result.latency_delta_ms / 1000.0)
        metrics.SHADOW_COST_DELTA.labels(flag).observe(result.cost_delta.get("money", 0.0))
        log.info(
            "shadow comparison",
            extra={
                "shadow": {
                    "flag": flag,
                    "request_id": request_id,
                    "overlap_at_10": round(result.overlap, 3),
                    "rank_corr": round(result.rank_corr, 3),
                    "latency_delta_ms": round(result.latency_delta_ms, 2),
                    "cost_delta": {k: round(v, 8) for k, v in result.cost_delta.items()},
                }
            },
        )
        return result

    # -- feedback --------------------------------------------------------------------------------------
    async def feedback(
        self,
        tenant: str,
        request_id: str,
        *,
        rating: float | None = None,
        clicked: Sequence[str] | None = None,
        relevance: Mapping[str, float] | None = None,
    ) -> dict[str, Any] | None:
        """Apply feedback on a served request to the bandit. None when the request is unknown to this
        replica, expired, already rated, or was served from the cache (no plan ran). Raises ValueError
        when the feedback carries no signal (the decision then stays, for a valid feedback)."""
        feedback_reward((), relevance=relevance, clicked=clicked, rating=rating)  # refuse before taking
        decision = self.decisions.take(request_id, tenant)
        if decision is None:
            return None
        quality = feedback_reward(
            decision.served_doc_ids, relevance=relevance, clicked=clicked, rating=rating
        )
        cpu_s = decision.cost
        reward = net_reward(quality, cpu_s, self.config.router.cost_weight)
        self.bandit.update(tenant, decision.arm, decision.features, reward)
        self.decisions.log_reward(decision, reward, quality=quality, cpu_s=cpu_s)
        self._updates_since_save += 1
        if self._updates_since_save >= SAVE_EVERY:
            await self.save_bandit()
        metrics.FEEDBACK.labels(decision.arm).inc()
        metrics.BANDIT_REWARD.labels(decision.arm).observe(reward)
        return {"arm": decision.arm, "quality": quality, "reward": reward, "cpu_s": cpu_s}


FEATURE_MEMO_ENTRIES = 10_000
BANDIT_STORE = "bandit_store"  # rag_background_errors_total's loop label for bandit state load/save
SAVE_EVERY = 20  # bandit updates between saves of its state (and at shutdown)


def load_rollout_config(path: Path | None) -> RolloutConfig:
    """The rollout config file's contents (defaults when there is none). A bad file fails startup."""
    if path is None:
        return RolloutConfig()
    if not path.is_file():
        raise FileNotFoundError(f"RAG_ROLLOUT_CONFIG={str(path)!r} does not exist")
    return RolloutConfig.parse_text(path.read_text(), "json" if path.suffix == ".json" else "toml")


def budget_policy(config: RolloutConfig) -> BudgetPolicy:
    b = config.budgets
    return BudgetPolicy(
        global_per_hour=b.global_per_hour,
        soft_fraction=b.soft_fraction,
        over_budget=b.over_budget,
        tenants={t: TenantBudget(tb.per_hour, tb.over_budget) for t, tb in b.tenants.items()},
    )


def _fallback_metrics(event: FallbackEvent) -> None:
    tenant, flag = event.key
    metrics.FALLBACK_TRIPPED.labels(tenant, flag).set(1 if event.kind == "tripped" else 0)
    metrics.FALLBACK_EVENTS.labels(flag, event.kind).inc()
