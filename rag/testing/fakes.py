"""Deterministic stand-ins that ship with the library so tests need no model download. The embedder they
build on, :class:`rag.dense.hashing.HashEmbedder`, is a real one that production code may select."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from rag.dense.embedder import Embedder
from rag.dense.hashing import HashEmbedder
from rag.llm import Synthesis
from rag.rerank.cross_encoder import Pair, PairScorer, Reranker
from rag.retrieval.compute import NO_QUEUE, QueueEstimate
from rag.text.analyzer import Analyzer
from rag.types import Result, Step

T = TypeVar("T")


class FailingEmbedder(HashEmbedder):
    """A :class:`HashEmbedder` that raises when a text contains ``marker`` (a failed ingest or query)."""

    def __init__(self, dim: int = 64, *, marker: str = "EXPLODE") -> None:
        super().__init__(dim)
        self.marker = marker

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if any(self.marker in t for t in texts):
            raise RuntimeError(f"embedder failure injected by {self.marker!r}")
        return super().embed(texts, batch_size=batch_size, progress=progress)


class ThreadedCompute:
    """The service's shape of compute without its queues: CPU and model work in worker threads (so a
    step's timeout can abandon a call that hangs), nothing queued, nothing run inline."""

    def __init__(self, embedder: Embedder | None = None, reranker: Reranker | None = None) -> None:
        self.embedder = embedder
        self.reranker = reranker

    async def run(self, fn: Callable[..., T], *args: Any, lane: str = "", step: Step | None = None) -> T:
        return await asyncio.to_thread(fn, *args)

    def runs_inline(self, step: Step) -> bool:
        return False

    def queue_estimate(self, step: Step, lane: str, units: int = 1) -> QueueEstimate:
        return NO_QUEUE

    def retry_after_s(self) -> int:
        return 1

    async def embed_query(self, text: str, embedder: Embedder | None = None) -> np.ndarray:
        model = embedder or self.embedder
        assert model is not None, "no embedder"
        vectors = await asyncio.to_thread(model.embed, [text])
        first: np.ndarray = vectors[0]
        return first

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        assert self.reranker is not None, "no reranker"
        return await asyncio.to_thread(self.reranker.score_pairs, pairs)


class PacedEmbedder(HashEmbedder):
    """A model with a real model's cost profile and none of its weights: a call sleeps ``per_text_s`` per
    text with the GIL released (as an ONNX or torch forward pass runs), then returns the hash embedder's
    vectors. Its speed is steady whatever the load: a *healthy* dependency for overload tests."""

    def __init__(self, dim: int = 64, *, per_text_s: float = 0.002) -> None:
        super().__init__(dim)
        self.per_text_s = per_text_s
        self.calls: list[int] = []
        self._terms: dict[str, np.ndarray] = {}  # a test's vocabulary: small

    def _term_vector(self, term: str) -> np.ndarray:
        vector = self._terms.get(term)
        if vector is None:
            vector = self._terms[term] = super()._term_vector(term)
        return vector

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        self.calls.append(len(texts))
        time.sleep(self.per_text_s * len(texts))
        return super().embed(texts, batch_size=batch_size, progress=progress)


class OverlapReranker(PairScorer):
    """A deterministic stand-in cross-encoder: a pair scores the share of query stems found in the
    passage. Records each call's pair count (micro-batching is visible) and can be made slow."""

    first_stage_weight = 0.0

    def __init__(self, *, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.calls: list[int] = []
        self._analyzer = Analyzer()

    @property
    def name(self) -> str:
        return "overlap"

    def warm_up(self) -> None:
        """Nothing to load."""

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        self.calls.append(len(pairs))
        if self.delay_s:
            time.sleep(self.delay_s)
        out = np.zeros(len(pairs), dtype=np.float32)
        for i, (query, passage) in enumerate(pairs):
            q = set(self._analyzer.tokens(query))
            out[i] = len(q & set(self._analyzer.tokens(passage))) / max(len(q), 1)
        return out


class FakeChat:
    """An in-process chat model for answer synthesis (:class:`rag.llm.Synthesizer`): answers "About
    <query> [1]", reports fixed token usage, and records each query it was asked."""

    def __init__(
        self,
        *,
        prompt_tokens: int = 1000,
        completion_tokens: int = 200,
        model: str = "fake-chat",
        max_tokens: int = 256,
        max_passages: int = 5,
    ) -> None:
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = completion_tokens
        self.model = model
        self.max_tokens = max_tokens
        self.max_passages = max_passages
        self.calls: list[str] = []

    async def synthesize(self, query: str, results: Sequence[Result]) -> Synthesis:
        self.calls.append(query)
        return Synthesis(f"About {query} [1]", self.model, self.prompt_tokens, self.completion_tokens)

    async def close(self) -> None:
        return None
