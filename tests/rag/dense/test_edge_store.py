"""The embedded Rust engine (qdrant-edge) behind the store interface: the same rankings as qdrant-client's
local mode for exact search, HNSW recall against exact, layout checks. Behaviour every engine shares
(writes, filters, tenants, persistence, the lexical sparse vector) is in tests/contract/test_vector_store.py.

Vectors are drawn the way rotated embeddings look (rag.dense.matryoshka): unit vectors whose coordinate
variance decays along the axes, so the Matryoshka prefixes carry most of the energy and the funnel is a
real funnel, not a random one. Real engines on temp folders; no timing assertions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from rag.config import Settings, load_settings
from rag.dense.edge_store import LAYOUT_FILE, EdgeLayoutError, EdgeStore, edge_filter
from rag.dense.qdrant_store import QdrantStore
from rag.index.ingest import Ingestor
from rag.retrieval.filters import SearchFilter, qdrant_filter
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime, build_embedder, ingest_params, open_store
from rag.types import Document
from tests.contract.test_vector_store import embedding_like, payloads, point_ids

DIM = 384
Data = tuple[list[str], np.ndarray, list[dict[str, Any]], np.ndarray]  # ids, vectors, payloads, queries
N = 900


@pytest.fixture(scope="module")
def data() -> Data:
    return point_ids(N), embedding_like(N, DIM, seed=1), payloads(N), embedding_like(12, DIM, seed=2)


@pytest.fixture(scope="module")
def stores(
    tmp_path_factory: pytest.TempPathFactory,
    data: Data,
) -> Iterator[tuple[EdgeStore, QdrantStore]]:
    ids, vectors, pays, _ = data
    root = tmp_path_factory.mktemp("stores")
    edge = EdgeStore(root / "edge")
    local = QdrantStore(QdrantClient(":memory:"), "c")  # the same search code as on disk
    for store in (edge, local):
        store.ensure_collection(DIM)
        for start in range(0, N, 500):
            store.upsert(ids[start : start + 500], vectors[start : start + 500], pays[start : start + 500])
        store.optimize()
    yield edge, local
    edge.close()
    local.close()


FILTERS = {
    "none": None,
    "tenant": qdrant_filter(SearchFilter("acme")),
    "tenant+metadata": qdrant_filter(SearchFilter.of("globex", {"lang": ["en", "de"], "year": 2003})),
    "metadata": qdrant_filter(SearchFilter.of(None, {"lang": "fr"})),
}


@pytest.mark.parametrize("flt", FILTERS)
@pytest.mark.parametrize(
    ("dims", "rescore"), [(None, True), (64, True), (128, True), (256, True), (64, False), (256, False)]
)
def test_exact_rankings_equal_local_mode(
    stores: tuple[EdgeStore, QdrantStore],
    data: Data,
    dims: int | None,
    rescore: bool,
    flt: str,
) -> None:
    edge, local = stores
    queries = data[3]
    for q in queries:
        kwargs: dict[str, Any] = dict(limit=10, dims=dims, prefetch=50, rescore=rescore)
        got = edge.search(q, query_filter=FILTERS[flt], **kwargs)
        want = local.search(q, query_filter=FILTERS[flt], **kwargs)
        assert [pid for pid, _ in got] == [pid for pid, _ in want]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in want], atol=1e-4)
        assert len(got) == 10


def test_edge_filter_translates_what_the_pipeline_builds_and_refuses_the_rest() -> None:
    assert edge_filter(None) is None
    assert edge_filter(qdrant_filter(SearchFilter.of("acme", {"lang": ["en"], "year": [1, 2]}))) is not None
    with pytest.raises(TypeError, match="cannot translate"):
        edge_filter(models.Filter(must=[models.FieldCondition(key="year", range=models.Range(gte=2000))]))


def test_tenant_keyword_index_and_named_vectors(stores: tuple[EdgeStore, QdrantStore]) -> None:
    edge, _ = stores
    info = edge.shard.info()
    assert "tenant" in info.payload_schema and info.points_count == N
    (record,) = edge.shard.retrieve([point_ids(1)[0]], with_payload=True, with_vector=True)
    vectors = record.vector
    assert isinstance(vectors, dict)
    sizes = {name: len(v) for name, v in vectors.items() if isinstance(v, list)}
    assert sizes == {"full": 384, "d64": 64, "d128": 128, "d256": 256}
    assert record.payload is not None and record.payload["tenant"] == "acme"


def test_nothing_before_the_collection_and_one_opener_per_folder(tmp_path: Path) -> None:
    # upserts, deletes, counts, filters and reopening: tests/contract/test_vector_store.py (every engine)
    ids, vectors, pays = point_ids(30), embedding_like(30, DIM, seed=3), payloads(30)
    store = EdgeStore(tmp_path / "edge")
    assert store.count() == 0 and store.all_ids() == set() and store.existing(ids) == set()
    assert store.search(vectors[0], limit=5) == []  # no collection yet: nothing, not an error
    store.delete(ids)
    store.ensure_collection(DIM)
    store.upsert(ids, vectors, pays)
    store.close()

    reopened = EdgeStore(tmp_path / "edge")
    with pytest.raises(EdgeLayoutError, match="rag ingest"):
        reopened.ensure_collection(DIM // 2)
    with pytest.raises(RuntimeError, match="in use by another process"):
        EdgeStore(tmp_path / "edge")  # one opener per folder (its WAL is locked), like local mode
    reopened.close()


def test_the_lexical_flag_is_recorded_in_the_layout(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "lex", lexical=True)
    store.ensure_collection(DIM)
    store.close()
    assert json.loads((tmp_path / "lex" / LAYOUT_FILE).read_text())["lexical"] is True
    with pytest.raises(EdgeLayoutError, match=r"with the lexical sparse vector.*rag ingest PATH"):
        EdgeStore(tmp_path / "lex")
    plain = EdgeStore(tmp_path / "plain")
    plain.ensure_collection(DIM)
    plain.close()
    assert "lexical" not in json.loads((tmp_path / "plain" / LAYOUT_FILE).read_text())  # as older folders
    EdgeStore(tmp_path / "lex", lexical=True).close()


def test_a_folder_in_another_layout_is_refused_with_the_rebuild_command(tmp_path: Path) -> None:
    local_folder = tmp_path / "local"
    client = QdrantClient(path=str(local_folder))
    QdrantStore(client, "c").ensure_collection(DIM)
    client.close()
    with pytest.raises(EdgeLayoutError, match=r"local-mode folder.*rag ingest PATH"):
        EdgeStore(local_folder)
    older = tmp_path / "older"
    older.mkdir()
    (older / LAYOUT_FILE).write_text(json.dumps({"engine": "qdrant-edge", "layout": 0, "full_dim": DIM}))
    with pytest.raises(EdgeLayoutError, match=r"layout 0.*rag ingest PATH"):
        EdgeStore(older)


def test_hnsw_recall_at_10_against_exact(tmp_path: Path) -> None:
    n = 2500
    ids, vectors = point_ids(n), embedding_like(n, DIM, seed=4)
    store = EdgeStore(tmp_path / "edge", indexing_threshold_kb=1)  # index every segment
    store.ensure_collection(DIM)
    for start in range(0, n, 500):
        store.upsert(ids[start : start + 500], vectors[start : start + 500], payloads(500))
    store.optimize()
    assert store.shard.info().indexed_vectors_count > 0  # HNSW was built
    queries = embedding_like(50, DIM, seed=5)
    for dims in (None, 64):
        found = 0
        for q in queries:
            approx = {pid for pid, _ in store.search(q, limit=10, dims=dims)}
            exact = {pid for pid, _ in store.search(q, limit=10, dims=dims, exact=True)}
            found += len(approx & exact)
        assert found / (10 * len(queries)) >= 0.99, dims
    store.close()


def test_int8_quantization_keeps_recall_and_is_fixed_at_creation(tmp_path: Path) -> None:
    n = 2500
    ids, vectors = point_ids(n), embedding_like(n, DIM, seed=4)
    store = EdgeStore(tmp_path / "q", indexing_threshold_kb=1, quantization="int8")
    store.ensure_collection(DIM)
    for start in range(0, n, 500):
        store.upsert(ids[start : start + 500], vectors[start : start + 500], payloads(500))
    store.optimize()
    assert list((tmp_path / "q").rglob("quantized.data"))  # the int8 copies exist
    queries = embedding_like(50, DIM, seed=5)
    found = 0
    for q in queries:
        approx = {pid for pid, _ in store.search(q, limit=10)}
        exact = {pid for pid, _ in store.search(q, limit=10, exact=True)}  # float32, every point
        found += len(approx & exact)
    assert found / (10 * len(queries)) >= 0.97
    store.close()
    assert json.loads((tmp_path / "q" / LAYOUT_FILE).read_text())["quantization"] == "int8"
    with pytest.raises(EdgeLayoutError, match=r"quantization 'int8'.*RAG_EDGE_QUANTIZATION"):
        EdgeStore(tmp_path / "q")
    reopened = EdgeStore(tmp_path / "q", quantization="int8")
    assert reopened.count() == n
    reopened.close()


# -- through the runtime: RAG_VECTOR_ENGINE=edge ----------------------------------------------------------
DOCS = [
    Document("cat", "Cats purr and hunt mice.", "Cat", {"lang": "en", "year": 2020}, tenant="acme"),
    Document("owl", "Owls hunt mice at night.", "Owl", {"lang": "en", "year": 2021}, tenant="acme"),
    Document("cat", "Le chat chasse les souris. mice", "Chat", {"lang": "fr", "year": 2020}, tenant="globex"),
    Document("cat", "Unscoped cat document about mice.", "Cat"),
    Document("whale", "Whales sing underwater songs.", "Whale", tenant="globex"),
]


def engine_runtime(root: Path, engine: str, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    for key in [k for k in __import__("os").environ if k.startswith("RAG_")]:
        monkeypatch.delenv(key)
    settings: Settings = load_settings(
        data_dir=root / engine, embedder_model="hash:64", collection="test", vector_engine=engine
    )
    store = open_store(settings)
    assert isinstance(store, EdgeStore if engine == "edge" else QdrantStore)
    Ingestor(ingest_params(settings), build_embedder(settings), store, progress=False).ingest(DOCS)
    return Runtime.open(settings, load_reranker=False, store=store)


def test_runtime_on_the_edge_engine_answers_as_local_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    edge = engine_runtime(tmp_path, "edge", monkeypatch)
    local = engine_runtime(tmp_path, "local", monkeypatch)
    assert (tmp_path / "edge" / "qdrant-edge" / "test" / LAYOUT_FILE).is_file()
    try:
        for pipeline in (PipelineName.DENSE, PipelineName.HYBRID):
            plan = plan_for(pipeline, edge.settings, top_k=10, reranker_available=False)
            for flt in (
                SearchFilter(None),
                SearchFilter("acme"),
                SearchFilter("globex"),
                SearchFilter.of(None, {"year": 2020}),
            ):
                got = edge.pipeline.results(edge.pipeline.search("mice cat", plan, flt).hits, 10)
                want = local.pipeline.results(local.pipeline.search("mice cat", plan, flt).hits, 10)
                assert [(r.doc_id, r.title) for r in got] == [(r.doc_id, r.title) for r in want], flt
        plan = plan_for(PipelineName.DENSE, edge.settings, top_k=10, reranker_available=False)
        acme = edge.pipeline.results(edge.pipeline.search("whale songs", plan, SearchFilter("acme")).hits, 10)
        assert {r.title for r in acme} == {"Cat", "Owl"}  # never globex's whale
    finally:
        edge.close()
        local.close()


def test_switching_engine_fills_the_new_one_from_the_index_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = engine_runtime(tmp_path, "local", monkeypatch)
    plan = plan_for(PipelineName.DENSE, local.settings, top_k=10, reranker_available=False)
    want = [
        r.doc_id for r in local.pipeline.results(local.pipeline.search("mice", plan, SearchFilter()).hits, 10)
    ]
    local.close()
    settings = load_settings(
        data_dir=tmp_path / "local", embedder_model="hash:64", collection="test", vector_engine="edge"
    )
    # the segments carry the vectors: the edge shard is filled from them at open, nothing is embedded
    embedder = build_embedder(settings)
    calls: list[int] = []
    embed = embedder.embed
    monkeypatch.setattr(embedder, "embed", lambda texts, **kw: calls.append(len(texts)) or embed(texts, **kw))
    edge = Runtime.open(settings, load_reranker=False, embedder=embedder)
    assert edge.store.count() == len(edge.snapshot.point_rows)
    got = [
        r.doc_id for r in edge.pipeline.results(edge.pipeline.search("mice", plan, SearchFilter()).hits, 10)
    ]
    assert got == want
    assert calls == [1]  # the query only
    edge.close()
