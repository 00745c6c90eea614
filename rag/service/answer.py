"""The values that cross between ``api/`` and the service: a query request and its answer.

Invariant: an answer holds typed values only (the routing decision with its plan, degradations, the cost,
the synthesised answer); ``api.schemas.QueryResponse`` reads it attribute by attribute
(``from_attributes``), so the JSON shape is stated once, in the response model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from rag.acl import Caller
from rag.llm import Synthesis
from rag.retrieval.plan import QueryPlan
from rag.retrieval.shaping import DEFAULT_SHAPE, Abstention, ResultShape
from rag.rollout.config import Profile
from rag.routing.costs import QueryCost
from rag.service.planning import RoutingDecision
from rag.types import CacheLevel, Degradation, Result


@dataclass(frozen=True, slots=True)
class QueryRequest:
    tenant: str
    query: str
    top_k: int = 10
    filters: dict[str, Any] | None = None
    profile: Profile | None = None
    answer: bool = False  # synthesise an answer through the LLM, when one is configured
    session_id: str | None = None  # the unit of per-session flags (A/B by session)
    caller: Caller | None = None  # who the query is for (document ACLs, rag.acl); None: anonymous
    # result shaping (rag.retrieval.shaping): calibrated-confidence floor, grouping, MMR diversity
    min_score: float | None = None
    shape: ResultShape = DEFAULT_SHAPE


@dataclass(frozen=True, slots=True)
class AnswerCost:
    """What one answer cost: the work (texts embedded, pairs reranked, candidates), then its price once
    settled (CPU-ms and money at the rollout config's prices; None when nothing was booked, e.g. a cache
    hit), then the synthesis's tokens and its share of the money."""

    embedded_texts: int
    rerank_pairs: int
    candidates: int
    cpu_ms: float | None = None
    money: float | None = None
    currency: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_money: float = 0.0

    def settled(self, cost: QueryCost, currency: str) -> AnswerCost:
        """With the retrieval's booked price."""
        return replace(
            self, cpu_ms=round(cost.cpu_ms_total, 3), money=round(cost.money_total, 8), currency=currency
        )

    def synthesized(
        self, prompt_tokens: int, completion_tokens: int, money: float, currency: str
    ) -> AnswerCost:
        """With a synthesis's tokens; its ``money`` is added to the retrieval's."""
        return replace(
            self,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            llm_money=round(money, 8),
            money=round((self.money or 0.0) + money, 8),
            currency=currency,
        )


@dataclass(frozen=True, slots=True)
class SynthesizedAnswer:
    """The LLM's answer from the passages; ``reused``: the same normalised query's answer from the same
    passages, served again without a model call."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    reused: bool

    @classmethod
    def of(cls, out: Synthesis, *, reused: bool) -> SynthesizedAnswer:
        return cls(out.text, out.model, out.prompt_tokens, out.completion_tokens, reused)


@dataclass(frozen=True, slots=True)
class QueryAnswer:
    """One answered query. ``decision`` is how it was routed (its ``plan`` is the plan that ran, or whose
    cached answer was served: the cache namespace holds the plan, so the two are equal)."""

    request_id: str  # "" outside HTTP (nothing can rate the answer)
    results: list[Result]
    decision: RoutingDecision
    degraded: tuple[Degradation, ...]
    cache: CacheLevel
    timings_ms: Mapping[str, float]
    cost: AnswerCost
    index_version: str
    took_ms: float
    answer: SynthesizedAnswer | None = None
    abstained: Abstention | None = None  # min_score left no result: why

    @property
    def route(self) -> str:
        return self.decision.plan.route

    @property
    def query_plan(self) -> QueryPlan:
        return self.decision.plan

    @property
    def plan(self) -> dict[str, Any]:
        """The response's ``plan``: the plan's knobs, then how it was chosen (profile, router, features,
        budget, variants, fallback): a view of ``decision``."""
        return {**self.decision.plan.as_dict(), **self.decision.plan_dict()}
