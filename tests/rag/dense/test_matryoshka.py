import numpy as np
import pytest

from rag.dense.matryoshka import (
    energy_retained,
    fit_rotation,
    identity_rotation,
    rotate,
    scoring_work,
    truncate,
)
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime
from rag.types import Document
from tests.conftest import make_ingestor


def anisotropic(n: int = 400, dim: int = 48, seed: int = 0) -> np.ndarray:
    """Unit vectors whose variance lives in a few random directions, like sentence embeddings."""
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    scales = np.geomspace(10, 0.1, dim)
    x = (rng.standard_normal((n, dim)) * scales) @ basis.T + 3 * basis[:, 5]
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_rotation_is_orthogonal_and_preserves_similarities() -> None:
    x = anisotropic()
    r = fit_rotation(x)
    assert np.allclose(r.T @ r, np.eye(r.shape[0]), atol=1e-5)
    assert np.allclose(rotate(x, r) @ rotate(x, r).T, x @ x.T, atol=1e-4)


def test_rotation_moves_energy_into_leading_dimensions() -> None:
    x = anisotropic()
    r = fit_rotation(x)
    for d in (4, 8, 16):
        assert energy_retained(r, x, d) > energy_retained(identity_rotation(x.shape[1]), x, d) + 0.1
    per_dim = (rotate(x, r) ** 2).sum(axis=0)
    assert (np.diff(per_dim) <= 1e-3).all()  # decreasing energy per coordinate


def test_rotation_fits_fewer_vectors_than_dimensions() -> None:
    r = fit_rotation(anisotropic(n=5))
    assert r.shape == (48, 48) and np.allclose(r.T @ r, np.eye(48), atol=1e-5)


def test_truncate_renormalises_and_validates() -> None:
    t = truncate(np.array([[3.0, 4.0, 12.0]], dtype=np.float32), 2)
    assert np.allclose(t, [[0.6, 0.8]])
    with pytest.raises(ValueError, match=r"dims must be in \[1, 3\]"):
        truncate(np.ones((1, 3)), 4)
    with pytest.raises(ValueError, match="non-empty"):
        fit_rotation(np.empty((0, 3)))


def test_scoring_work() -> None:
    assert scoring_work(1000, 384, None, 200) == 384_000
    assert scoring_work(1000, 384, 64, 200) == 64_000 + 200 * 384
    assert scoring_work(100, 384, 64, 200) == 6_400 + 100 * 384  # prefetch capped by the collection size


def test_funnel_search_finds_the_same_best_document(settings) -> None:
    settings = settings.model_copy(update={"embedder_model": "hash:384"})
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(300)]
    docs = [Document(f"d{i}", " ".join(rng.choice(words, 12)), "") for i in range(120)]
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(docs)
    store.close()
    runtime = Runtime.open(settings, load_reranker=False)
    try:
        for dims in (64, 128, 256, None):
            plan = plan_for(PipelineName.DENSE, settings, top_k=5, reranker_available=False).with_(
                dims=dims, prefetch=40
            )
            found = sum(runtime.pipeline.search(d.text, plan).hits[0].doc_id == d.doc_id for d in docs[:30])
            assert found >= 29, (dims, found)
    finally:
        runtime.close()


def test_prefix_only_scoring_work() -> None:
    assert scoring_work(1000, 384, 64, 200, rescore=False) == 64_000
