"""Helpers for the query cache tests: indexes, namespaces, deterministic vectors, answers of a chosen
size."""

from __future__ import annotations

from typing import Any

import numpy as np

from rag.cache.keys import IndexIdentity, Namespace

DIM = 16


def index(version: str = "v1", collection: str = "svc") -> IndexIdentity:
    """The identity of a published ``version`` (its manifest names the version and collection only)."""
    return IndexIdentity.of(collection, version, {"version": version, "collection": collection})


def ns(tenant: str = "acme", version: str = "v1", **params: Any) -> Namespace:
    return Namespace.of(tenant, index(version), "hash:16", {"filters": params})


def vector(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


def answer(version: str = "v1", *, text_bytes: int = 2000, doc: str = "cat") -> dict[str, Any]:
    """A cacheable answer whose JSON is about ``text_bytes`` long."""
    result = {
        "doc_id": doc,
        "score": 1.0,
        "rank": 1,
        "title": "Cat",
        "text": "x" * text_bytes,
        "chunk_id": f"{doc}#0",
        "metadata": {},
    }
    return {"results": [result], "route": "hybrid", "plan": {"route": "hybrid"}, "index_version": version}


def no_idf(term: str) -> float | None:
    return None
