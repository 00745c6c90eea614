"""The hash embedder: a real, deterministic embedder that needs no model weights.

Each stem of a text (the BM25 analyzer's tokens) is hashed (blake2b) into the seed of a fixed standard-normal
vector; a text's embedding is the L2-normalised sum of its stems' vectors. Invariants: the same text always
gets the same vector, on any machine and in any process (nothing is trained or fitted); texts that share
stems get similar vectors; a text with no stem gets one fixed vector, never a zero one. Its quality is
lexical, not semantic: it serves tests, benchmarks of everything but the model, and a service that must run
without weights. Selected by ``RAG_EMBEDDER_MODEL=hash:<dim>[:<delay seconds per text>][#<variant>]``: a
variant is another model of the same dimension (another projection, and another name), e.g. the "new model"
of a re-embedding test.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence

import numpy as np

from rag.text.analyzer import Analyzer

HASH_PREFIX = "hash:"


class HashEmbedder:
    """Bag-of-stems hashed into a fixed random projection (see the module docstring).

    ``delay_s`` sleeps per text: a throttle that makes an ingest slow enough to interrupt (crash-safety
    tests); 0 by default.
    """

    def __init__(self, dim: int = 64, *, delay_s: float = 0.0, variant: str = "") -> None:
        if dim < 2:
            raise ValueError(f"dim must be at least 2, got {dim}")
        self._dim = dim
        self._delay_s = delay_s
        self._variant = variant
        self._analyzer = Analyzer()

    @property
    def name(self) -> str:
        return f"{HASH_PREFIX}{self._dim}" + (f"#{self._variant}" if self._variant else "")

    @property
    def dim(self) -> int:
        return self._dim

    def warm_up(self) -> None:
        """Nothing to load."""

    def _term_vector(self, term: str) -> np.ndarray:
        key = term if not self._variant else f"{self._variant}\x00{term}"
        seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
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


def is_hash_spec(model: str) -> bool:
    """Whether an embedder name selects the hash embedder rather than a sentence-transformers model."""
    return model.startswith(HASH_PREFIX)


def parse_hash_spec(spec: str) -> HashEmbedder:
    """``hash:<dim>[:<delay seconds per text>][#<variant>]`` → :class:`HashEmbedder`."""
    body, _, variant = spec.partition("#")
    parts = body.split(":")
    if len(parts) not in (2, 3) or parts[0] != "hash" or not parts[1].isdigit():
        raise ValueError(
            f"hash embedder spec must look like 'hash:64', 'hash:64:0.01' or 'hash:64#b', got {spec!r}"
        )
    return HashEmbedder(int(parts[1]), delay_s=float(parts[2]) if len(parts) == 3 else 0.0, variant=variant)
