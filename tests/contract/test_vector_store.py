"""The vector-store contract: one set of behaviour tests, run against every engine behind
:class:`rag.dense.store.VectorStore`.

Engines: ``edge`` (qdrant-edge, Qdrant's Rust engine in process: the embedded default), ``local``
(qdrant-client's local mode on disk) and ``server`` (a real Qdrant server through qdrant-client). The
server runs only when ``RAG_TEST_QDRANT_URL`` is set (e.g. ``http://localhost:6333``): each test then
works in a fresh, randomly named collection that it drops afterwards; without the variable the server
is not among the engines (not a skip: it is opt-in). **The server path has not run here** (no Qdrant
server can be installed on the machine this suite was written on); the first run against one is its
first check.

Behaviours: create (idempotent), upsert (idempotent by id), existing, stored_vectors, count, all_ids,
delete, search at every Matryoshka prefix with and without rescoring, tenant and metadata filters,
reopening (persistence), and the ``lexical`` sparse vector: BM25 scores (the IDF modifier's Lucene IDF over
the collection), filters, deletes, and the flag being fixed at creation. Engine-specific behaviour (the
edge engine's layout file, HNSW recall, quantization; exact rankings of edge vs local) stays in
tests/rag/dense/test_edge_store.py.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient

from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.bm25.sparse import SparseEncoder, mean_length
from rag.dense.edge_store import EdgeStore
from rag.dense.qdrant_store import QdrantStore
from rag.dense.store import SparseVector, VectorStore
from rag.retrieval.filters import SearchFilter, qdrant_filter
from rag.text.analyzer import Analyzer

SERVER_URL = os.environ.get("RAG_TEST_QDRANT_URL")
DIM = 384
TENANTS = ("acme", "globex", "")
LANGS = ("en", "fr", "de")


def embedding_like(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors whose coordinate variance decays along the axes, as rotated embeddings do."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)) / np.sqrt(1.0 + np.arange(dim) / 8.0)
    return np.asarray(vectors / np.linalg.norm(vectors, axis=1, keepdims=True), dtype=np.float32)


def point_ids(n: int) -> list[str]:
    return [str(uuid.uuid5(uuid.NAMESPACE_URL, f"point-{i}")) for i in range(n)]


def payloads(n: int) -> list[dict[str, Any]]:
    return [
        {
            "chunk_id": f"c{i}",
            "doc_id": f"d{i}",
            "tenant": TENANTS[i % 3],
            "metadata": {"lang": LANGS[(i // 3) % 3], "year": 2000 + i % 7},
        }
        for i in range(n)
    ]


@dataclass
class Engine:
    """Opens stores of one engine on one test's folder (or server collection); closes and drops them."""

    name: str
    folder: Path
    opened: list[VectorStore] = field(default_factory=list)
    collection: str = field(default_factory=lambda: f"contract-{uuid.uuid4().hex[:12]}")

    def open(self, *, lexical: bool = False) -> VectorStore:
        """A store on this test's collection: opening again after ``close`` is reopening it."""
        opener: dict[str, Callable[[], VectorStore]] = {
            "edge": lambda: EdgeStore(self.folder / "edge", lexical=lexical),
            "local": lambda: QdrantStore(
                QdrantClient(path=str(self.folder / "local")), self.collection, lexical=lexical
            ),
            "server": lambda: QdrantStore(QdrantClient(url=SERVER_URL), self.collection, lexical=lexical),
        }
        store = opener[self.name]()
        self.opened.append(store)
        return store

    def reopen(self, store: VectorStore, *, lexical: bool = False) -> VectorStore:
        store.close()
        self.opened.remove(store)
        return self.open(lexical=lexical)

    def cleanup(self) -> None:
        for store in self.opened:
            store.close()
        if self.name == "server":
            client = QdrantClient(url=SERVER_URL)
            client.delete_collection(self.collection)
            client.close()


# the server joins only when one is named: an opt-in engine, not a missing component (no skip, so that a
# skip under CI=true stays a sign of something missing)
ENGINES = ["edge", "local", *(["server"] if SERVER_URL else [])]


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    eng = Engine(request.param, tmp_path)
    yield eng
    eng.cleanup()


def filled(
    engine: Engine, n: int, *, seed: int = 1, dim: int = DIM
) -> tuple[VectorStore, list[str], np.ndarray]:
    ids, vectors = point_ids(n), embedding_like(n, dim, seed)
    store = engine.open()
    store.ensure_collection(dim)
    for start in range(0, n, 500):
        store.upsert(ids[start : start + 500], vectors[start : start + 500], payloads(n)[start : start + 500])
    store.optimize()
    return store, ids, vectors


# -- points ----------------------------------------------------------------------------------------------
def test_upsert_is_idempotent_by_id_and_delete_removes(engine: Engine) -> None:
    ids, vectors, pays = point_ids(300), embedding_like(300, DIM, seed=3), payloads(300)
    store = engine.open()
    store.ensure_collection(DIM)
    store.ensure_collection(DIM)  # exists: a no-op
    assert store.count() == 0 and store.all_ids() == set() and store.existing(ids) == set()
    store.upsert(ids[:200], vectors[:200], pays[:200])
    store.upsert(ids[100:], vectors[100:], pays[100:])  # overlapping upsert: idempotent by id
    store.optimize()
    assert store.count() == 300 and store.all_ids() == set(ids)
    store.delete(ids[:50])
    store.delete([])
    store.optimize()
    assert store.count() == 250 and store.all_ids() == set(ids[50:])
    assert store.existing(ids[:60]) == set(ids[50:60])
    assert ids[10] not in {pid for pid, _ in store.search(vectors[10], limit=300)}


def test_stored_vectors_are_the_upserted_full_vectors(engine: Engine) -> None:
    store, ids, vectors = filled(engine, 50)
    unknown = str(uuid.uuid5(uuid.NAMESPACE_URL, "never-stored"))
    got = store.stored_vectors([ids[3], ids[40], unknown])
    assert got.keys() == {ids[3], ids[40]}  # an id the store lacks is left out
    np.testing.assert_allclose(got[ids[3]], vectors[3], atol=1e-6)
    np.testing.assert_allclose(got[ids[40]], vectors[40], atol=1e-6)
    store.delete([ids[3]])
    store.optimize()
    assert store.stored_vectors([ids[3]]) == {} and store.stored_vectors([]) == {}


def test_upsert_refuses_mismatched_lengths(engine: Engine) -> None:
    store = engine.open()
    store.ensure_collection(DIM)
    with pytest.raises(ValueError, match="differ"):
        store.upsert(point_ids(2), embedding_like(3, DIM, seed=1), payloads(2))


@pytest.mark.parametrize(
    ("dims", "rescore"), [(None, True), (64, True), (128, True), (256, True), (64, False), (256, False)]
)
def test_search_finds_each_point_first_at_every_prefix(
    engine: Engine, dims: int | None, rescore: bool
) -> None:
    store, ids, vectors = filled(engine, 300)
    for i in (0, 77, 299):
        hits = store.search(vectors[i], limit=5, dims=dims, prefetch=50, rescore=rescore)
        assert len(hits) == 5 and hits[0][0] == ids[i]
        assert hits[0][1] == pytest.approx(1.0, abs=1e-4)
        assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    with pytest.raises(ValueError, match="limit must be greater than 0"):
        store.search(vectors[0], limit=0)


def test_a_small_full_dimension_keeps_only_the_smaller_prefixes(engine: Engine) -> None:
    store, ids, vectors = filled(engine, 100, dim=128)  # prefixes: d64 only
    assert store.search(vectors[5], limit=1)[0][0] == ids[5]
    assert store.search(vectors[5], limit=1, dims=64, prefetch=20)[0][0] == ids[5]
    assert store.search(vectors[5], limit=1, dims=256)[0][0] == ids[5]  # at or past full: full vectors


def test_filters_keep_tenants_and_metadata_apart(engine: Engine) -> None:
    n = 900
    store, ids, _ = filled(engine, n)
    by_id = dict(zip(ids, payloads(n), strict=True))
    queries = embedding_like(2, DIM, seed=2)
    for tenant in TENANTS:
        hits = store.search(queries[0], limit=n, query_filter=qdrant_filter(SearchFilter(tenant)))
        assert len(hits) == n // 3  # every point of the tenant, and none of another
        assert {by_id[pid]["tenant"] for pid, _ in hits} == {tenant}
    flt = qdrant_filter(SearchFilter.of("acme", {"lang": ["fr", "de"], "year": 2004}))
    hits = store.search(queries[1], limit=n, dims=64, prefetch=n, query_filter=flt)
    expected = {
        pid
        for pid, p in by_id.items()
        if p["tenant"] == "acme" and p["metadata"]["lang"] in ("fr", "de") and p["metadata"]["year"] == 2004
    }
    assert expected and {pid for pid, _ in hits} == expected


def test_reopening_keeps_the_points(engine: Engine) -> None:
    store, ids, vectors = filled(engine, 300)
    store.delete(ids[:50])
    store.optimize()
    before = store.search(vectors[70], limit=10, dims=128)
    reopened = engine.reopen(store)
    reopened.ensure_collection(DIM)  # exists: a no-op
    assert reopened.count() == 250 and reopened.all_ids() == set(ids[50:])
    after = reopened.search(vectors[70], limit=10, dims=128)
    assert [pid for pid, _ in after] == [pid for pid, _ in before]
    np.testing.assert_allclose([s for _, s in after], [s for _, s in before], atol=1e-5)  # float32 on disk


# -- the lexical sparse vector ---------------------------------------------------------------------------
TEXTS = [
    "Cats are small domesticated carnivorous mammals that purr and hunt mice.",
    "Dogs are loyal domesticated mammals descended from wolves; they bark at cats.",
    "Owls are nocturnal birds of prey with silent flight that hunt mice at night.",
    "Salmon are fish that swim upstream from the ocean to spawn in rivers.",
    "Bees are flying insects that pollinate flowers and make honey and wax.",
    "Whales are huge marine mammals that breathe air and sing underwater songs.",
    "Mice mice mice: small rodents that cats, owls and snakes hunt.",
    "A very long text about mammals " + "and their habits in the wild " * 6,
    "",  # no indexed term: no sparse entry, and outside the IDF corpus
]
QUERIES = ["which animals hunt mice", "domesticated mammals", "mammals mammals songs", "honey", "unknownword"]
PARAMS = BM25Params(k1=0.9, b=0.4)


def lexical_store(engine: Engine, n_copies: int = 3) -> tuple[VectorStore, list[str], list[list[str]]]:
    """``n_copies`` copies of TEXTS, one tenant per copy (so filters split the copies)."""
    analyzer = Analyzer()
    texts = TEXTS * n_copies
    tokens = [analyzer.tokens(t) for t in texts]
    encoder = SparseEncoder(PARAMS, mean_length(t for t in tokens if t))
    ids = point_ids(len(texts))
    pays = [
        {"chunk_id": f"c{i}", "doc_id": f"d{i}", "tenant": TENANTS[i // len(TEXTS)], "metadata": {}}
        for i in range(len(texts))
    ]
    store = engine.open(lexical=True)
    store.ensure_collection(DIM)
    store.upsert(ids, embedding_like(len(texts), DIM, seed=7), pays, encoder.documents(tokens))
    store.optimize()
    return store, ids, tokens


def reference_scores(tokens: list[list[str]], query: str) -> np.ndarray:
    """Our BM25 over the chunks that have terms (the sparse corpus), 0 for the others."""
    kept = [i for i, t in enumerate(tokens) if t]
    index = BM25Index(TermMatrix.empty().append([tokens[i] for i in kept]), Analyzer(), PARAMS)
    scores = np.zeros(len(tokens))
    scores[kept] = index.scores(Analyzer().tokens(query))
    return scores


def test_sparse_search_scores_bm25_with_the_collection_idf(engine: Engine) -> None:
    store, ids, tokens = lexical_store(engine)
    row = {pid: i for i, pid in enumerate(ids)}
    for query in QUERIES:
        want = reference_scores(tokens, query)
        got = store.search_sparse(SparseEncoder.query(Analyzer().tokens(query)), limit=len(ids))
        assert {row[pid] for pid, _ in got} == set(np.flatnonzero(want)), query  # every match, no other
        for pid, score in got:
            assert score == pytest.approx(want[row[pid]], rel=1e-5), query
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert store.search_sparse(SparseVector([], []), limit=5) == []


def test_sparse_filters_restrict_the_hits_not_the_idf(engine: Engine) -> None:
    store, ids, tokens = lexical_store(engine)
    row = {pid: i for i, pid in enumerate(ids)}
    query = SparseEncoder.query(Analyzer().tokens("which animals hunt mice"))
    want = reference_scores(tokens, "which animals hunt mice")
    for tenant in TENANTS:
        got = store.search_sparse(query, limit=len(ids), query_filter=qdrant_filter(SearchFilter(tenant)))
        rows = [row[pid] for pid, _ in got]
        assert rows and {TENANTS[r // len(TEXTS)] for r in rows} == {tenant}
        for pid, score in got:  # IDF over the whole collection, as our index over the whole version
            assert score == pytest.approx(want[row[pid]], rel=1e-5)


def test_sparse_search_never_returns_a_deleted_point(engine: Engine) -> None:
    store, ids, _ = lexical_store(engine)
    query = SparseEncoder.query(Analyzer().tokens("mice"))
    matched = [pid for pid, _ in store.search_sparse(query, limit=len(ids))]
    store.delete(matched[:2])
    store.optimize()
    after = [pid for pid, _ in store.search_sparse(query, limit=len(ids))]
    assert set(after) == set(matched[2:])


def test_lexical_is_fixed_at_creation_and_checked_on_upsert(engine: Engine) -> None:
    plain, ids, vectors = filled(engine, 10)
    query = SparseEncoder.query(["mice"])
    with pytest.raises(ValueError, match="no lexical sparse vector"):
        plain.search_sparse(query, limit=5)
    with pytest.raises(ValueError, match="no lexical sparse vector"):
        plain.upsert(ids[:1], vectors[:1], payloads(1), [query])
    with pytest.raises((ValueError, RuntimeError), match="lexical"):
        engine.reopen(plain, lexical=True).ensure_collection(DIM)


def test_a_lexical_store_needs_sparse_vectors_and_keeps_them_on_reopen(engine: Engine) -> None:
    store, ids, _ = lexical_store(engine)
    with pytest.raises(ValueError, match="one sparse vector per point"):
        store.upsert(point_ids(1), embedding_like(1, DIM, seed=1), payloads(1))
    with pytest.raises(ValueError, match="differ"):
        store.upsert(point_ids(2), embedding_like(2, DIM, seed=1), payloads(2), [SparseVector([1], [1.0])])
    query = SparseEncoder.query(Analyzer().tokens("domesticated mammals"))
    before = dict(store.search_sparse(query, limit=len(ids)))  # every match: the copies tie
    reopened = engine.reopen(store, lexical=True)
    reopened.ensure_collection(DIM)
    after = dict(reopened.search_sparse(query, limit=len(ids)))
    assert after.keys() == before.keys()
    assert all(after[pid] == pytest.approx(score, rel=1e-6) for pid, score in before.items())
    with pytest.raises((ValueError, RuntimeError), match="lexical"):
        engine.reopen(reopened, lexical=False).ensure_collection(DIM)
