"""Document ACLs inside retrieval (rag.acl, rag.retrieval.filters): every retriever (BM25, PRF and
sub-queries, dense with and without a lower-dimension prefetch, the sparse BM25 in Qdrant) returns only
what the caller may see, and everything it may see that matches; the Qdrant payload condition selects
exactly the visible points (edge engine and qdrant-client local mode); the row mask equals the rule row
by row; ACLs at ingest change point ids only when present."""

from __future__ import annotations

import json
import random
import uuid
from pathlib import Path

import numpy as np
import pytest

from rag.acl import AccessScope, AclDefault, Caller
from rag.bm25.index import TermMatrix
from rag.bm25.sparse import SparseEncoder, mean_length
from rag.config import Settings
from rag.dense.edge_store import EdgeStore
from rag.index.chunk_table import ChunkRecord
from rag.index.shard_sync import payload
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import point_id
from rag.io.sources import SourceError, read_beir_jsonl
from rag.retrieval.filters import SearchFilter, acl_condition, qdrant_filter, row_mask
from rag.retrieval.plan import PipelineName, plan_for
from rag.retrieval.retrievers import BM25Retriever, SparseBM25Retriever
from rag.runtime import Runtime
from rag.text.analyzer import Analyzer
from rag.types import Document
from tests.conftest import make_ingestor

WORDS = [
    "mice",
    "owl",
    "night",
    "honey",
    "bee",
    "river",
    "stone",
    "cloud",
    "forest",
    "winter",
    "salt",
    "iron",
]
USERS = [f"u{i}" for i in range(8)]
GROUPS = [f"g{i}" for i in range(5)]


def random_acl(rng: random.Random) -> tuple[str, ...]:
    if rng.random() < 0.25:
        return ()  # no ACL: the default decides
    entries = {f"user:{rng.choice(USERS)}" for _ in range(rng.randint(0, 2))}
    entries |= {f"group:{rng.choice(GROUPS)}" for _ in range(rng.randint(0, 2))}
    return tuple(sorted(entries)) or ("user:nobody",)


def corpus(seed: int = 3) -> list[Document]:
    rng = random.Random(seed)
    docs = []
    for tenant, n in (("acme", 60), ("globex", 20)):
        for i in range(n):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 9)))
            docs.append(
                Document(f"{tenant[0]}{i}", text, f"T{i}", {"n": i % 3}, tenant=tenant, acl=random_acl(rng))
            )
    return docs


DOCS = corpus()
BY_KEY = {d.key: d for d in DOCS}


def random_scope(rng: random.Random) -> AccessScope:
    caller = (
        None
        if rng.random() < 0.15
        else Caller(rng.choice(USERS), frozenset(rng.sample(GROUPS, rng.randint(0, 2))))
    )
    return AccessScope.of(caller, rng.choice(list(AclDefault)))


def naive_visible(doc: Document, scope: AccessScope, tenant: str) -> bool:
    """The rule, written out again: the tenant's, and its ACL names the caller (or none, under public)."""
    if doc.tenant != tenant:
        return False
    if not doc.acl:
        return scope.unlisted is AclDefault.PUBLIC
    return any(entry in scope.entries for entry in doc.acl)


@pytest.fixture(scope="module")
def runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    tmp = tmp_path_factory.mktemp("acl")
    settings = Settings(data_dir=tmp / "data", embedder_model="hash:256", collection="acl")
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(DOCS)
    store.close()
    return Runtime.open(settings, load_reranker=False)


@pytest.mark.parametrize(
    "pipeline,multi,dims",
    [
        (PipelineName.BM25, False, None),
        (PipelineName.DENSE, False, None),
        (PipelineName.DENSE, False, 64),  # a lower-dimension prefetch, then the full rescore
        (PipelineName.HYBRID, False, None),
        (PipelineName.HYBRID, True, None),  # PRF and sub-queries
    ],
)
def test_every_retriever_returns_what_the_caller_may_see_and_all_of_it(
    runtime: Runtime, pipeline: PipelineName, multi: bool, dims: int | None
) -> None:
    rng = random.Random(11)
    plan = plan_for(pipeline, runtime.settings, top_k=100, reranker_available=False)
    plan = plan.with_(multi_query=multi, candidates=200, dims=dims)
    checked = 0
    for _ in range(40):
        scope, tenant = random_scope(rng), rng.choice(["acme", "globex"])
        words = rng.sample(WORDS, 2)
        query = f"{words[0]} and {words[1]}" if multi else " ".join(words)
        flt = SearchFilter.of(tenant, None, access=scope)
        outcome = runtime.pipeline.search(query, plan, flt)
        got = {h.doc_id for h in outcome.hits}
        visible = {d.key for d in DOCS if naive_visible(d, scope, tenant)}
        assert got <= visible, (scope, tenant, got - visible)
        if pipeline is PipelineName.BM25:  # everything visible that shares a word with the query
            matching = {k for k in visible if set(words) & set(BY_KEY[k].text.split())}
            assert got == matching
        if pipeline is PipelineName.DENSE and dims is None:  # candidates cover the tenant: all of it
            assert got == visible
        checked += len(got)
    assert checked > 100  # not vacuous


def assert_payload_condition(runtime: Runtime, rng: random.Random) -> None:
    store = runtime.pipeline.dense.store  # type: ignore[union-attr]
    snapshot = runtime.snapshot
    query = np.ones(256, dtype=np.float32) / 16.0
    for _ in range(30):
        scope, tenant = random_scope(rng), rng.choice(["acme", "globex"])
        flt = SearchFilter.of(tenant, None, access=scope)
        points = store.search(query, limit=1000, query_filter=qdrant_filter(flt))
        got = {snapshot.chunks[snapshot.point_rows[p]].doc_key for p, _ in points}
        assert got == {d.key for d in DOCS if naive_visible(d, scope, tenant)}, scope


def test_the_payload_condition_selects_exactly_the_visible_points(runtime: Runtime) -> None:
    """The Qdrant filter alone (no row mask): what the vector search itself returns (edge engine)."""
    assert_payload_condition(runtime, random.Random(5))


def test_the_row_mask_is_the_rule_row_by_row(runtime: Runtime) -> None:
    rng = random.Random(9)
    snapshot = runtime.snapshot
    for _ in range(50):
        scope, tenant = random_scope(rng), rng.choice(["acme", "globex", None])
        flt = SearchFilter.of(tenant, {"n": [0, 1]} if rng.random() < 0.5 else None, access=scope)
        mask = row_mask(snapshot, flt)
        assert mask is not None
        assert mask.tolist() == [flt.matches(c) for c in snapshot.chunks]


def test_a_scope_that_hides_nothing_is_dropped_and_costs_nothing(tmp_path: Path) -> None:
    """No ACL'd chunk of the tenant in the version and unlisted documents public: the filter is the one
    a query had before ACLs (no mask beyond the tenant's, no payload condition, the same cache key)."""
    settings = Settings(data_dir=tmp_path / "data", embedder_model="hash:256", collection="plain")
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(
        [
            Document("a", "mice at night", tenant="acme"),
            Document("b", "owl", tenant="globex", acl=("user:x",)),
        ]
    )
    store.close()
    snapshot = Runtime.open(settings, load_reranker=False).snapshot
    public = SearchFilter.of("acme", None, access=AccessScope.of(Caller("x"), AclDefault.PUBLIC))
    assert public.within(snapshot) == SearchFilter("acme")
    deny = SearchFilter.of("acme", None, access=AccessScope.of(Caller("x"), AclDefault.DENY))
    assert deny.within(snapshot) == deny  # under deny the unlisted document is hidden: the scope stays
    listed = SearchFilter.of("globex", None, access=AccessScope.of(None, AclDefault.PUBLIC))
    assert listed.within(snapshot) == listed
    assert snapshot.acl_tenants == {"globex"}


def test_a_scope_naming_no_one_matches_nothing_in_qdrant(tmp_path: Path) -> None:
    """Anonymous under deny: the condition must not be an empty ``should`` (Qdrant: no condition)."""
    condition = acl_condition(AccessScope.of(None, AclDefault.DENY))
    assert condition.should and len(condition.should) == 1


def test_acls_change_point_ids_only_when_present_and_publish(tmp_path: Path) -> None:
    assert point_id("acme\x1fd#0", "text", {"k": 1}) == point_id("acme\x1fd#0", "text", {"k": 1}, acl=())
    assert point_id("d#0", "t", acl=("user:a",)) != point_id("d#0", "t")
    assert point_id("d#0", "t", acl=("user:a",)) != point_id("d#0", "t", acl=("user:b",))
    settings = Settings(data_dir=tmp_path / "data", embedder_model="hash:256", collection="ids")
    ingestor, store = make_ingestor(settings)
    try:
        first = ingestor.ingest([Document("d", "mice at night", tenant="acme")])
        same = ingestor.ingest([Document("d", "mice at night", tenant="acme")])
        assert same.version == first.version  # idempotent, as before
        changed = ingestor.ingest([Document("d", "mice at night", tenant="acme", acl=("group:eng",))])
        assert changed.version != first.version  # an ACL change publishes
    finally:
        store.close()
    snapshot = Runtime.open(settings, load_reranker=False).snapshot
    (chunk,) = snapshot.chunks
    assert chunk.acl == ("group:eng",)
    assert chunk.point_id == point_id("acme\x1fd#0", "mice at night", {}, acl=("group:eng",))


def test_a_chunk_row_without_an_acl_is_written_as_before() -> None:
    plain = ChunkRecord("d#0", "d", 0, "T", "text", "pid", {"k": 1}, "acme")
    assert "acl" not in json.loads(plain.to_json())
    listed = ChunkRecord("d#0", "d", 0, "T", "text", "pid", {}, "acme", ("group:eng", "user:a"))
    assert ChunkRecord.from_json(listed.to_json()) == listed
    assert payload(listed)["acl"] == ["group:eng", "user:a"] and "acl" not in payload(plain)


def test_jsonl_ingest_reads_and_bounds_the_acl(tmp_path: Path) -> None:
    path = tmp_path / "corpus.jsonl"
    path.write_text(
        json.dumps({"_id": "a", "text": "x", "acl": ["user:bob", "group:eng", "user:bob"]})
        + "\n"
        + json.dumps({"_id": "b", "text": "y"})
        + "\n"
    )
    a, b = read_beir_jsonl(path)
    assert a.acl == ("group:eng", "user:bob") and b.acl == ()
    for bad, match in (
        ([], "empty ACL"),
        ([f"user:u{i}" for i in range(65)], "at most 64 entries"),
        (["bob"], "entries must match"),
    ):
        path.write_text(json.dumps({"_id": "a", "text": "x", "acl": bad}) + "\n")
        with pytest.raises(SourceError, match=f"corpus.jsonl:1: field acl: .*{match}"):
            list(read_beir_jsonl(path))


def test_the_sparse_bm25_in_qdrant_sees_what_the_mask_sees(tmp_path: Path) -> None:
    analyzer = Analyzer()
    chunks = [
        ChunkRecord(
            f"{d.doc_id}#0",
            d.doc_id,
            0,
            d.title,
            d.text,
            str(uuid.uuid5(uuid.NAMESPACE_URL, d.key)),
            d.metadata,
            d.tenant,
            d.acl,
        )
        for d in DOCS
    ]
    tokens = [analyzer.tokens(c.passage) for c in chunks]
    snapshot = IndexSnapshot("v1", {}, chunks, TermMatrix.empty().append(tokens), None, analyzer)
    encoder = SparseEncoder(snapshot.bm25_params, mean_length(tokens))
    store = EdgeStore(tmp_path / "edge", lexical=True)
    try:
        store.ensure_collection(16)
        vectors = np.random.default_rng(0).standard_normal((len(chunks), 16)).astype(np.float32)
        store.upsert(
            [c.point_id for c in chunks], vectors, [payload(c) for c in chunks], encoder.documents(tokens)
        )
        sparse, bm25 = SparseBM25Retriever(snapshot, store), BM25Retriever(snapshot)
        rng = random.Random(2)
        for _ in range(30):
            scope, tenant = random_scope(rng), rng.choice(["acme", "globex"])
            flt = SearchFilter.of(tenant, None, access=scope)
            mask = row_mask(snapshot, flt)
            query = " ".join(rng.sample(WORDS, 2))
            want = bm25.retrieve(query, 100, mask=mask)
            got = sparse.retrieve(query, 100, mask=mask, flt=flt)
            assert {h.doc_id for h in got} == {h.doc_id for h in want}
            assert {h.doc_id for h in got} <= {d.key for d in DOCS if naive_visible(d, scope, tenant)}
    finally:
        store.close()


def test_qdrant_client_local_mode_applies_the_same_condition(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", embedder_model="hash:256", collection="local", vector_engine="local"
    )
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(DOCS)
    store.close()
    runtime = Runtime.open(settings, load_reranker=False)
    try:
        assert_payload_condition(runtime, random.Random(4))
    finally:
        runtime.close()
