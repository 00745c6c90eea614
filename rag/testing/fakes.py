"""Deterministic stand-ins that ship with the library so tests need no model download."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np

from rag.llm import Synthesis
from rag.rerank.cross_encoder import Pair, PairScorer
from rag.text.analyzer import Analyzer
from rag.types import Result


class HashEmbedder:
    """Bag-of-stems hashed into a fixed random projection: texts that share words get similar vectors,
    and the same text always gets the same vector (seeded from a hash of each stem).

    ``delay_s`` sleeps per text, to make an ingest slow enough to interrupt in a test.
    """

    def __init__(self, dim: int = 64, *, delay_s: float = 0.0) -> None:
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        self._dim = dim
        self._delay_s = delay_s
        self._analyzer = Analyzer()

    @property
    def name(self) -> str:
        return f"hash:{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        """Nothing to load."""

    def _term_vector(self, term: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(term.encode(), digest_size=8).digest(), "little")
        return np.random.default_rng(seed).standard_normal(self._dim)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float64)
        for i, text in enumerate(texts):
            if self._delay_s:
                time.sleep(self._delay_s)
            for term in self._analyzer.tokens(text):
                out[i] += self._term_vector(term)
            if not out[i].any():
                out[i] = self._term_vector("\x00empty")
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out.astype(np.float32)


def parse_hash_spec(spec: str) -> HashEmbedder:
    """``hash:<dim>[:<delay seconds per text>]`` → :class:`HashEmbedder`."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or parts[0] != "hash" or not parts[1].isdigit():
        raise ValueError(f"hash embedder spec must look like 'hash:64' or 'hash:64:0.01', got {spec!r}")
    return HashEmbedder(int(parts[1]), delay_s=float(parts[2]) if len(parts) == 3 else 0.0)


class FailingEmbedder(HashEmbedder):
    """A :class:`HashEmbedder` that raises when a text contains ``marker`` (a failed ingest or query)."""

    def __init__(self, dim: int = 64, *, marker: str = "EXPLODE") -> None:
        super().__init__(dim)
        self.marker = marker

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        if any(self.marker in t for t in texts):
            raise RuntimeError(f"embedder failure injected by {self.marker!r}")
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
