"""Cross-encoder reranking of the top of a fused list (sentence-transformers ``CrossEncoder``)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rag.rerank.domain import RERANKER_CONFIG as RERANKER_CONFIG  # re-exported: its old home
from rag.types import Hit

DEFAULT_MAX_LENGTH = 256


@dataclass(frozen=True, slots=True)
class RerankerDefaults:
    """What `rag train-reranker` recorded beside a model: its training length and the blend weight (the
    chosen one; where validation chose not to rerank at all, the best blend, for an operator override)."""

    max_length: int = DEFAULT_MAX_LENGTH
    first_stage_weight: float = 0.0

    @classmethod
    def of(cls, model: str) -> RerankerDefaults:
        config = Path(model) / RERANKER_CONFIG
        if not config.is_file():
            return cls()
        data = json.loads(config.read_text())
        weight = data.get("first_stage_weight")
        if weight is None:
            weight = data.get("best_blend_weight")
        return cls(
            max_length=int(data.get("config", {}).get("max_length", DEFAULT_MAX_LENGTH)),
            first_stage_weight=float(weight or 0.0),
        )


Pair = tuple[str, str]  # (query, passage)


class Reranker(Protocol):
    """Scores (query, passage) pairs; higher = more relevant. ``first_stage_weight`` is how much of the
    first-stage rank to blend into the reranked order (see :func:`rerank`). Pairs may come from several
    queries at once (the service micro-batches concurrent requests into one forward pass)."""

    first_stage_weight: float

    @property
    def name(self) -> str: ...

    def warm_up(self) -> None: ...

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray: ...


class PairScorer:
    """``score(query, passages)`` for rerankers that implement ``score_pairs``."""

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        raise NotImplementedError

    def score(self, query: str, passages: Sequence[str]) -> np.ndarray:
        return self.score_pairs([(query, p) for p in passages])


def rerank(
    hits: Sequence[Hit],
    ce_scores: np.ndarray,
    *,
    depth: int,
    first_stage_weight: float = 0.0,
    rrf_k: int = 60,
) -> list[Hit]:
    """Reorder the first ``depth`` hits by cross-encoder score; the rest keep their order after them.

    With ``first_stage_weight`` > 0 the new order is an RRF of the cross-encoder rank (weight 1) and the
    first-stage rank (that weight) — a guard against a reranker that is confidently wrong.
    """
    head, tail = list(hits[:depth]), list(hits[depth:])
    if len(ce_scores) != len(head):
        raise ValueError(f"got {len(ce_scores)} reranker scores for {len(head)} hits")
    ce_rank = np.empty(len(head), dtype=np.int64)
    ce_rank[np.argsort(-ce_scores, kind="stable")] = np.arange(1, len(head) + 1)
    fused = 1.0 / (rrf_k + ce_rank) + first_stage_weight / (rrf_k + np.arange(1, len(head) + 1))
    order = np.argsort(-fused, kind="stable") if first_stage_weight > 0 else np.argsort(ce_rank)
    reranked = [Hit(head[i].doc_id, float(ce_scores[i]), head[i].chunk_id) for i in order]
    return reranked + tail


class CrossEncoderReranker(PairScorer):
    """A CrossEncoder by name or path, loaded in :meth:`warm_up`; pairs are batched and capped in length."""

    def __init__(
        self, model: str, *, max_length: int | None = None, batch_size: int = 32, device: str = "cpu"
    ) -> None:
        defaults = RerankerDefaults.of(model)
        self._max_length = max_length or defaults.max_length
        if self._max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self._max_length}")
        self._model_name = model
        self._batch_size = batch_size
        self._device = device
        self._model: Any = None
        self.first_stage_weight = defaults.first_stage_weight

    @property
    def name(self) -> str:
        return self._model_name

    def warm_up(self) -> None:
        if self._model is None:
            from sentence_transformers import CrossEncoder

            if Path(self._model_name).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
            self._model = CrossEncoder(self._model_name, device=self._device, max_length=self._max_length)

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        if not pairs:
            return np.empty(0, dtype=np.float32)
        self.warm_up()
        assert self._model is not None
        # CrossEncoder.predict sorts pairs by length before batching, so mixed queries pad little
        scores = self._model.predict(list(pairs), batch_size=self._batch_size, show_progress_bar=False)
        return np.asarray(scores, dtype=np.float32).reshape(-1)
