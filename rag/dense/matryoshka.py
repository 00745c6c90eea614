"""Matryoshka-style truncation for a model that was not trained for it.

At ingest the collection's embeddings are rotated onto their principal axes (an orthogonal rotation, so
full-dimension cosine similarities are unchanged); the leading coordinates then carry the most energy and a
prefix of ``d`` coordinates is a good low-dimensional sketch. Search prefetches candidates with the
``d``-prefix and rescores them with the full vector (the funnel).
"""

from __future__ import annotations

import numpy as np

# The prefix lengths a collection stores next to the full vector (named vectors ``d64``/``d128``/``d256``)
# and a plan may search with; changing them changes every collection's layout (re-ingest).
MATRYOSHKA_DIMS: tuple[int, ...] = (64, 128, 256)


def fit_rotation(vectors: np.ndarray) -> np.ndarray:
    """Orthogonal ``(D, D)`` matrix whose columns are the right singular vectors of ``vectors`` (uncentred,
    so dot products are preserved), ordered by decreasing singular value."""
    if vectors.ndim != 2 or vectors.shape[0] == 0:
        raise ValueError(f"need a non-empty (n, D) matrix to fit a rotation, got shape {vectors.shape}")
    # the full (D, D) basis needs full_matrices only when there are fewer vectors than dimensions; with
    # more, it would also build an (n, n) U (20k sample: 3 GiB, a minute) for the same vt (bitwise equal)
    _, _, vt = np.linalg.svd(vectors.astype(np.float64), full_matrices=vectors.shape[0] < vectors.shape[1])
    return np.ascontiguousarray(vt.T, dtype=np.float32)


def identity_rotation(dim: int) -> np.ndarray:
    return np.eye(dim, dtype=np.float32)


def rotate(vectors: np.ndarray, rotation: np.ndarray) -> np.ndarray:
    return np.asarray(vectors @ rotation, dtype=np.float32)


def truncate(vectors: np.ndarray, dims: int) -> np.ndarray:
    """The first ``dims`` coordinates, re-normalised to unit length."""
    if dims <= 0 or dims > vectors.shape[-1]:
        raise ValueError(f"dims must be in [1, {vectors.shape[-1]}], got {dims}")
    head = vectors[..., :dims]
    norms = np.linalg.norm(head, axis=-1, keepdims=True)
    return np.asarray(head / np.maximum(norms, 1e-12), dtype=np.float32)


def energy_retained(rotation: np.ndarray, vectors: np.ndarray, dims: int) -> float:
    """Share of squared norm that the first ``dims`` rotated coordinates keep (1.0 = lossless)."""
    rotated = rotate(vectors, rotation)
    return float((rotated[:, :dims] ** 2).sum() / max((rotated**2).sum(), 1e-12))


def scoring_work(
    n_points: int, full_dim: int, dims: int | None, prefetch: int, *, rescore: bool = True
) -> int:
    """Multiply-adds for one exhaustive query: ``n * full`` without a funnel, ``n * d + prefetch * full``
    with a ``d``-dimensional prefetch of ``prefetch`` candidates rescored at full dimension (``n * d`` when
    the prefix alone ranks)."""
    if dims is None or dims >= full_dim:
        return n_points * full_dim
    return n_points * dims + (min(prefetch, n_points) * full_dim if rescore else 0)
