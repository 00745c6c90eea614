"""Query plans: which retrievers, at what Matryoshka dimension, fused how, reranked how deep."""

from __future__ import annotations

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

    def with_(self, **changes: object) -> QueryPlan:
        return replace(self, **changes)  # type: ignore[arg-type]


def plan_for(
    pipeline: PipelineName, settings: Settings, *, top_k: int = 10, reranker_available: bool
) -> QueryPlan:
    """The fixed plan of a named pipeline under ``settings``.

    ``auto`` is the plan the service serves by default: hybrid, reranked when a reranker is configured.
    (The cost-aware router replaces this when it lands.)
    """
    if pipeline is PipelineName.AUTO:
        pipeline = PipelineName.HYBRID_RERANK if reranker_available else PipelineName.HYBRID
    retrievers = {
        PipelineName.BM25: ("bm25",),
        PipelineName.DENSE: ("dense",),
        PipelineName.HYBRID: ("bm25", "dense"),
        PipelineName.HYBRID_RERANK: ("bm25", "dense"),
    }[pipeline]
    candidates = max(settings.candidates, top_k)
    return QueryPlan(
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
