"""Choosing the embedder from settings."""

from __future__ import annotations

from rag.config import Settings
from rag.dense.embedder import Embedder, SentenceTransformerEmbedder


def build_embedder(settings: Settings) -> Embedder:
    """``hash:<dim>`` selects the deterministic test embedder; anything else is a sentence-transformers
    model name or path."""
    if settings.embedder_model.startswith("hash:"):
        from rag.testing.fakes import parse_hash_spec

        return parse_hash_spec(settings.embedder_model)
    return SentenceTransformerEmbedder(settings.embedder_model, max_seq_length=settings.embed_max_seq_length)
