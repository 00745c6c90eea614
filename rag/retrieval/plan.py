"""Query plans: which retrievers, at what Matryoshka dimension, fused how, reranked how deep.

:func:`plan_for` builds a named pipeline's plan from the configured defaults, and nothing more: the caps
of a profile and a budget are applied in one place, the router (:func:`rag.routing.router.fit`). Its fusion
is the serving collection's tuned choice where ``rag tune`` made one (:mod:`rag.index.tuning`), else the
configured one; ``fusion_reason`` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from rag.dense.matryoshka import MATRYOSHKA_DIMS
from rag.fusion import FusionChoice, FusionMethod


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
    fusion_reason: str = "configured default"
    rerank_depth: int = 0
    # adaptive depth: rerank only when BM25 and dense agree on at least this share of their top 10
    # (None = always); see :mod:`rag.retrieval.rerank_depth`
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
            "fusion_reason": self.fusion_reason,
            "rerank_depth": self.rerank_depth,
            "rerank_gate": self.rerank_gate,
            "multi_query": self.multi_query,
        }


class PlanSettings(Protocol):
    """The settings a default plan is built from (``rag.config.Settings`` has them: ``RAG_CANDIDATES``…)."""

    @property
    def candidates(self) -> int: ...
    @property
    def dense_dims(self) -> int | None: ...
    @property
    def prefetch_limit(self) -> int: ...
    @property
    def prefetch_factor(self) -> int: ...
    @property
    def dense_rescore(self) -> bool: ...
    @property
    def fusion(self) -> str: ...
    @property
    def bm25_weight(self) -> float: ...
    @property
    def dense_weight(self) -> float: ...
    @property
    def rrf_k(self) -> int: ...
    @property
    def rerank_depth(self) -> int: ...


def configured_fusion(settings: PlanSettings) -> FusionChoice:
    """The fusion of a collection `rag tune` has not tuned: RAG_FUSION, RAG_RRF_K and the weights."""
    return FusionChoice(
        FusionMethod.from_str(settings.fusion),
        {"bm25": settings.bm25_weight, "dense": settings.dense_weight},
        settings.rrf_k,
        "configured default (RAG_FUSION)",
    )


def plan_for(
    pipeline: PipelineName,
    settings: PlanSettings,
    *,
    top_k: int = 10,
    reranker_available: bool,
    fusion: FusionChoice | None = None,
) -> QueryPlan:
    """The default plan of a named pipeline under ``settings``, before any profile or budget. ``auto``
    here is hybrid, reranked when a reranker is configured; the service and ``rag eval --pipeline auto``
    plan each query with the router (:mod:`rag.routing.router`) instead. ``fusion``: the serving
    version's tuned choice (None: the configured one); a hybrid whose choice weights a leg 0 runs the other
    leg alone."""
    if pipeline is PipelineName.AUTO:
        pipeline = PipelineName.HYBRID_RERANK if reranker_available else PipelineName.HYBRID
    choice = fusion or configured_fusion(settings)
    retrievers = {
        PipelineName.BM25: ("bm25",),
        PipelineName.DENSE: ("dense",),
        PipelineName.HYBRID: choice.legs,
        PipelineName.HYBRID_RERANK: choice.legs,
    }[pipeline]
    candidates = max(settings.candidates, top_k)
    return QueryPlan(
        retrievers=retrievers,
        top_k=top_k,
        candidates=candidates,
        dims=settings.dense_dims,
        prefetch=min(settings.prefetch_limit, settings.prefetch_factor * candidates),
        rescore=settings.dense_rescore,
        fusion=choice.method,
        weights=dict(choice.weights),
        rrf_k=choice.rrf_k,
        fusion_reason=choice.reason,
        rerank_depth=settings.rerank_depth if pipeline is PipelineName.HYBRID_RERANK else 0,
    )
