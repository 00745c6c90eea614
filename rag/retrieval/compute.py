"""Where a run's work runs. The pipeline is written once, as a coroutine; a :class:`Compute` decides the
threads: :class:`InlineCompute` runs everything in the caller's thread (the CLI and evaluation, through
:meth:`rag.retrieval.pipeline.SearchPipeline.search`); the service's compute runs CPU work in threads and
micro-batches model calls across concurrent requests (``rag.service.batching``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from rag.dense.embedder import Embedder
from rag.rerank.cross_encoder import Pair, Reranker
from rag.types import Step

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class QueueEstimate:
    """What the queue in front of a step would add if the step were submitted now (admission control):
    the wait before its call starts, and the call as the queue would run it (a model's batch with the
    submissions ahead of it). Zero when nothing is queued (or nothing has been measured yet)."""

    wait_s: float = 0.0
    call_s: float = 0.0


NO_QUEUE = QueueEstimate()


class Compute(Protocol):
    """Where the pipeline's work runs."""

    async def run(self, fn: Callable[..., T], *args: Any, lane: str = "", step: Step | None = None) -> T:
        """CPU work that is not a model call (BM25, the vector search); ``lane`` (the tenant) is whose
        turn it takes in a shared pool; ``step`` names it, for :meth:`runs_inline`."""
        ...

    def runs_inline(self, step: Step) -> bool:
        """Whether ``step``'s CPU work runs in the caller's thread, at once (cheap enough that a trip
        through a pool would cost more than the work)."""
        ...

    def queue_estimate(self, step: Step, lane: str, units: int = 1) -> QueueEstimate:
        """What the queue in front of ``step`` would add if it were submitted now (:class:`QueueEstimate`)."""
        ...

    def retry_after_s(self) -> int:
        """Whole seconds until the CPU work queued now has drained (the ``Retry-After`` of a refusal)."""
        ...

    async def embed_query(self, text: str, embedder: Embedder | None = None) -> np.ndarray:
        """``text`` embedded by ``embedder`` (the served index version's, which a pipeline passes), or by
        the compute's own embedder when None."""
        ...

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray: ...


class InlineCompute:
    """Everything in the calling thread, one query at a time."""

    def __init__(self, embedder: Embedder | None, reranker: Reranker | None) -> None:
        self.embedder = embedder
        self.reranker = reranker

    async def run(self, fn: Callable[..., T], *args: Any, lane: str = "", step: Step | None = None) -> T:
        return fn(*args)

    def runs_inline(self, step: Step) -> bool:
        return True

    def queue_estimate(self, step: Step, lane: str, units: int = 1) -> QueueEstimate:
        return NO_QUEUE  # one query at a time: nothing is ever queued

    def retry_after_s(self) -> int:
        return 1

    async def embed_query(self, text: str, embedder: Embedder | None = None) -> np.ndarray:
        model = embedder or self.embedder
        assert model is not None
        vector: np.ndarray = model.embed([text])[0]
        return vector

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        assert self.reranker is not None
        return self.reranker.score_pairs(pairs)
