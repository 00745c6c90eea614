"""Where a run's work runs. The pipeline is written once, as a coroutine; a :class:`Compute` decides the
threads: :class:`InlineCompute` runs everything in the caller's thread (the CLI and evaluation, through
:meth:`rag.retrieval.pipeline.SearchPipeline.search`); the service's compute runs CPU work in threads and
micro-batches model calls across concurrent requests (``rag.service.batching``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import numpy as np

from rag.dense.embedder import Embedder
from rag.rerank.cross_encoder import Pair, Reranker

T = TypeVar("T")


class Compute(Protocol):
    """Where the pipeline's work runs."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """CPU work that is not a model call (BM25, the vector search, fusion)."""
        ...

    async def embed_query(self, text: str) -> np.ndarray: ...

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray: ...


class InlineCompute:
    """Everything in the calling thread, one query at a time."""

    def __init__(self, embedder: Embedder | None, reranker: Reranker | None) -> None:
        self.embedder = embedder
        self.reranker = reranker

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def embed_query(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        vector: np.ndarray = self.embedder.embed([text])[0]
        return vector

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        assert self.reranker is not None
        return self.reranker.score_pairs(pairs)
