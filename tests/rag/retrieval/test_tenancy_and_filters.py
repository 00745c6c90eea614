"""Tenant-scoped documents in the core: same ids in two tenants, isolation in BM25 and dense search,
metadata filters as row masks and as Qdrant payload filters."""

from __future__ import annotations

import numpy as np
import pytest

from rag.config import Settings
from rag.retrieval.filters import FilterError, SearchFilter, row_mask
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime
from rag.tenancy import check_tenant, scoped_id, split_scoped
from rag.types import Document
from tests.conftest import make_ingestor

DOCS = [
    Document("cat", "Cats purr and hunt mice.", "Cat", {"lang": "en", "year": 2020}, tenant="acme"),
    Document("owl", "Owls hunt mice at night.", "Owl", {"lang": "en", "year": 2021}, tenant="acme"),
    Document("cat", "Le chat chasse les souris. mice", "Chat", {"lang": "fr", "year": 2020}, tenant="globex"),
    Document("cat", "Unscoped cat document about mice.", "Cat"),
]


def test_scoped_ids_round_trip_and_tenant_names_are_checked() -> None:
    assert scoped_id("", "d1") == "d1" and split_scoped("d1") == ("", "d1")
    assert split_scoped(scoped_id("acme", "a#b")) == ("acme", "a#b")
    with pytest.raises(ValueError, match="tenant must match"):
        check_tenant("ACME!")


@pytest.fixture
def runtime(settings: Settings) -> Runtime:
    ingestor, store = make_ingestor(settings)
    report = ingestor.ingest(DOCS)
    assert report.docs_added == 4  # three "cat" documents, one per tenant
    store.close()
    return Runtime.open(settings, load_reranker=False)


@pytest.mark.parametrize("pipeline", [PipelineName.BM25, PipelineName.DENSE, PipelineName.HYBRID])
def test_each_retriever_sees_only_the_tenant_asked_for(runtime: Runtime, pipeline: PipelineName) -> None:
    plan = plan_for(pipeline, runtime.settings, top_k=10, reranker_available=False)
    for tenant, expected in (("acme", {"cat", "owl"}), ("globex", {"cat"}), ("", {"cat"})):
        outcome = runtime.pipeline.search("mice cat", plan, SearchFilter(tenant))
        results = runtime.pipeline.results(outcome.hits, 10)
        assert {r.doc_id for r in results} == expected, (tenant, results)
        titles = {r.title for r in results}
        assert titles <= {"acme": {"Cat", "Owl"}, "globex": {"Chat"}, "": {"Cat"}}[tenant]
    everyone = runtime.pipeline.search("mice cat", plan, SearchFilter(None))
    assert len(everyone.hits) == 4  # the CLI and evaluation see every tenant


def test_metadata_filters(runtime: Runtime) -> None:
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=10, reranker_available=False)

    def ids(tenant: str | None, filters: dict[str, object]) -> list[str]:
        outcome = runtime.pipeline.search("mice", plan, SearchFilter.of(tenant, filters))
        return sorted(r.title for r in runtime.pipeline.results(outcome.hits, 10))

    assert ids("acme", {"year": 2021}) == ["Owl"]
    assert ids(None, {"year": 2020}) == ["Cat", "Chat"]
    assert ids(None, {"lang": ["fr"], "year": [2020, 2021]}) == ["Chat"]
    assert ids("acme", {"lang": "fr"}) == []
    assert ids(None, {"year": True}) == []  # True is not 1, nor 2020


def test_row_mask_and_filter_validation(runtime: Runtime) -> None:
    snapshot = runtime.snapshot
    assert row_mask(snapshot, SearchFilter()) is None
    mask = row_mask(snapshot, SearchFilter.of("acme", {"year": 2020}))
    assert mask is not None and [snapshot.chunks[i].title for i in np.flatnonzero(mask)] == ["Cat"]
    with pytest.raises(FilterError, match=r"filters\.k: at most 64 values"):
        SearchFilter.of(None, {"k": list(range(65))})
    with pytest.raises(FilterError, match="strings, integers or booleans"):
        SearchFilter.of(None, {"k": 1.5})
    with pytest.raises(FilterError, match="field names must match"):
        SearchFilter.of(None, {"a.b": 1})
