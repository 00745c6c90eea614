"""Query plans: which retrievers, at what Matryoshka dimension, fused how, reranked how deep."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum

from rag.config import MATRYOSHKA_DIMS, Settings
from rag.fusion import FusionMethod


class PipelineName(StrEnum):
    BM25 = "bm25"
    DENSE = "dense"
    HYBRID = "hybrid"
    HYBRID_RERANK = "hybrid-rerank"
    AUTO = "auto"

    @classmethod
    def from_str(cls, value: str) -> PipelineName:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"pipeline must be one of {[p.value for p in cls]}, got {value!r}") from None


class Profile(StrEnum):
    LATENCY = "latency"
    THROUGHPUT = "throughput"
    COST = "cost"
    BALANCED = "balanced"


@dataclass(frozen=True, slots=True)
class ProfileLimits:
    """What a profile allows a plan (None = the settings' value stands). ``batching`` applies to the
    deployment's profile (``RAG_PROFILE``): it sets the micro-batching window of the model calls."""

    max_candidates: int | None = None
    dims: int | None = None  # Matryoshka prefetch dimension (rescored at full dimension)
    max_rerank_depth: int | None = None
    multi_query: bool = True  # decomposition + pseudo-relevance feedback for complex queries
    batching: bool = True  # False: model calls do not wait for company (no micro-batching window)

    def as_dict(self) -> dict[str, object]:
        return {
            "max_candidates": self.max_candidates,
            "dims": self.dims,
            "max_rerank_depth": self.max_rerank_depth,
            "multi_query": self.multi_query,
            "batching": self.batching,
        }


# balanced: the router's plan within the configured limits; latency: a 64-d funnel, a shallow rerank, no
# multi-query, no batching wait; throughput: less model work per query, batched; cost: no
# cross-encoder, no multi-query. Overridable per deployment in the rollout config (``[profiles.<name>]``).
PROFILE_LIMITS: dict[Profile, ProfileLimits] = {
    Profile.BALANCED: ProfileLimits(),
    Profile.LATENCY: ProfileLimits(
        max_candidates=50, dims=64, max_rerank_depth=20, multi_query=False, batching=False
    ),
    Profile.THROUGHPUT: ProfileLimits(max_candidates=50, dims=128, max_rerank_depth=10),
    Profile.COST: ProfileLimits(max_candidates=50, dims=64, max_rerank_depth=0, multi_query=False),
}


@dataclass(frozen=True, slots=True)
class QueryPlan:
    retrievers: tuple[str, ...]
    top_k: int = 10
    candidates: int = 100
    dims: int | None = None
    prefetch: int = 200
    rescore: bool = True
    fusion: FusionMethod = FusionMethod.RRF
    weights: dict[str, float] = field(default_factory=lambda: {"bm25": 1.0, "dense": 1.0})
    rrf_k: int = 60
    rerank_depth: int = 0
    # adaptive depth: rerank only when BM25 and dense agree on at least this share of their top 10
    # (None = always); see :func:`rag.routing.adaptive.rerank_depth`
    rerank_gate: float | None = None
    multi_query: bool = False  # sub-queries (decomposition) and a PRF-expanded BM25 query, fused by RRF

    def __post_init__(self) -> None:
        unknown = set(self.retrievers) - {"bm25", "dense"}
        if not self.retrievers or unknown:
            raise ValueError(
                f"retrievers must be a non-empty subset of ['bm25', 'dense'], got {self.retrievers}"
            )
        if self.top_k < 1:
            raise ValueError(f"top_k must be greater than 0, got {self.top_k}")
        if self.candidates < self.top_k:
            raise ValueError(f"candidates ({self.candidates}) must be at least top_k ({self.top_k})")
        if self.dims is not None and self.dims not in MATRYOSHKA_DIMS:
            raise ValueError(f"dims must be one of {list(MATRYOSHKA_DIMS)} or None (full), got {self.dims}")
        if self.rerank_depth < 0:
            raise ValueError(f"rerank_depth must be >= 0, got {self.rerank_depth}")
        if self.rerank_gate is not None and not 0.0 <= self.rerank_gate <= 1.0:
            raise ValueError(f"rerank_gate must be in [0, 1] or None, got {self.rerank_gate}")

    def with_(self, **changes: object) -> QueryPlan:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def route(self) -> str:
        """The pipeline this plan amounts to (``bm25``, ``dense``, ``hybrid``, ``hybrid-rerank``…)."""
        base = "hybrid" if len(self.retrievers) == 2 else self.retrievers[0]
        return f"{base}-rerank" if self.rerank_depth > 0 else base

    def as_dict(self) -> dict[str, object]:
        return {
            "retrievers": list(self.retrievers),
            "top_k": self.top_k,
            "candidates": self.candidates,
            "dims": self.dims,
            "prefetch": self.prefetch if self.dims is not None else None,
            "rescore": self.rescore,
            "fusion": self.fusion.value,
            "weights": dict(self.weights),
            "rrf_k": self.rrf_k,
            "rerank_depth": self.rerank_depth,
            "rerank_gate": self.rerank_gate,
            "multi_query": self.multi_query,
        }


def profile_limits(profile: Profile, override: Mapping[str, object] | None = None) -> ProfileLimits:
    """The built-in limits of ``profile`` with the fields of ``override`` that are set (not None)."""
    limits = PROFILE_LIMITS[profile]
    changes = {k: v for k, v in (override or {}).items() if v is not None}
    return replace(limits, **changes) if changes else limits  # type: ignore[arg-type]


def apply_profile(plan: QueryPlan, profile: Profile, limits: ProfileLimits | None = None) -> QueryPlan:
    """``plan`` within the limits of ``profile`` (``limits``: the deployment's, when overridden)."""
    limits = limits or PROFILE_LIMITS[profile]
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
    if plan.multi_query and not limits.multi_query:
        changes["multi_query"] = False
    return plan.with_(**changes) if changes else plan


def plan_for(
    pipeline: PipelineName,
    settings: Settings,
    *,
    top_k: int = 10,
    reranker_available: bool,
    profile: Profile | None = None,
) -> QueryPlan:
    """The fixed plan of a named pipeline under ``settings``. ``auto`` here is hybrid, reranked when a
    reranker is configured; the service and ``rag eval --pipeline auto`` plan each query with the router
    (:mod:`rag.routing.router`) instead."""
    if pipeline is PipelineName.AUTO:
        pipeline = PipelineName.HYBRID_RERANK if reranker_available else PipelineName.HYBRID
    retrievers = {
        PipelineName.BM25: ("bm25",),
        PipelineName.DENSE: ("dense",),
        PipelineName.HYBRID: ("bm25", "dense"),
        PipelineName.HYBRID_RERANK: ("bm25", "dense"),
    }[pipeline]
    candidates = max(settings.candidates, top_k)
    plan = QueryPlan(
        retrievers=retrievers,
        top_k=top_k,
        candidates=candidates,
        dims=settings.dense_dims,
        prefetch=min(settings.prefetch_limit, settings.prefetch_factor * candidates),
        rescore=settings.dense_rescore,
        fusion=FusionMethod.from_str(settings.fusion),
        weights={"bm25": settings.bm25_weight, "dense": settings.dense_weight},
        rrf_k=settings.rrf_k,
        rerank_depth=settings.rerank_depth if pipeline is PipelineName.HYBRID_RERANK else 0,
    )
    return apply_profile(plan, profile or Profile(settings.profile))
