"""Metadata filters as row masks: a filtered query reads a per-version field index (built once per
field, in a worker thread), never the chunk records; the mask equals the per-chunk scan it replaced."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import numpy as np
import pytest
import scipy.sparse as sp

from rag.bm25.index import TermMatrix
from rag.config import Settings
from rag.index.snapshot import ChunkRecord, IndexSnapshot
from rag.retrieval import filters
from rag.retrieval.filters import FilterError, SearchFilter, row_mask
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import PipelineName, plan_for
from rag.testing.fakes import ThreadedCompute
from rag.text.analyzer import Analyzer

T = TypeVar("T")


class CountingChunks(list[ChunkRecord]):
    """The snapshot's chunk table, counting every record read (by index or by iteration)."""

    examined = 0

    def __getitem__(self, i: Any) -> Any:
        item = super().__getitem__(i)
        self.examined += len(item) if isinstance(i, slice) else 1
        return item

    def __iter__(self) -> Iterator[ChunkRecord]:
        for chunk in super().__iter__():
            self.examined += 1
            yield chunk


def _snapshot(chunks: list[ChunkRecord], texts: bool = False) -> IndexSnapshot:
    analyzer = Analyzer()
    terms = (
        TermMatrix.empty().append([analyzer.tokens(c.text) for c in chunks])
        if texts
        else TermMatrix(sp.csr_matrix((len(chunks), 0), dtype=np.int32), [])
    )
    table = CountingChunks(chunks)
    snapshot = IndexSnapshot("v1", {}, table, terms, None, analyzer)
    table.examined = 0  # loading reads every record: count from here
    return snapshot


def _corpus(n: int) -> list[ChunkRecord]:
    """``n`` chunks over two tenants; ``lang`` has 3 values, ``year`` 10, ``doc`` one per chunk."""
    langs = ("en", "fr", "de")
    return [
        ChunkRecord(
            f"d{i}#0", f"d{i}", 0, "", f"text {i}", f"p{i}",
            {"lang": langs[i % 3], "year": 2000 + i % 10, "doc": f"d{i}"},
            "acme" if i % 2 else "globex",
        )
        for i in range(n)
    ]  # fmt: skip


QUERIES = [
    SearchFilter.of("acme", {"lang": "fr"}),
    SearchFilter.of("acme", {"lang": ["fr", "de"], "year": [2001, 2003, 2005]}),
    SearchFilter.of("globex", {"doc": ["d2", "d4", "d7"]}),
    SearchFilter.of(None, {"year": 2004}),
    SearchFilter.of("acme", {"nosuchfield": "x"}),
]


@pytest.mark.parametrize("n", [1_000, 10_000])
def test_filtered_query_examines_no_chunk_records_after_the_field_index_is_built(
    n: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cost of a filtered query does not grow with the tenant's chunk count beyond the mask AND:
    once a field's index is built (one pass, first use), no chunk record is read again."""
    snapshot = _snapshot(_corpus(n))
    chunks = snapshot.chunks
    assert isinstance(chunks, CountingChunks)
    for flt in QUERIES:  # first use: builds each field's index (and each tenant's rows) once
        row_mask(snapshot, flt)
    builds = chunks.examined
    fields = {key for flt in QUERIES for key, _ in flt.fields} - {"nosuchfield"}
    tenants = {flt.tenant for flt in QUERIES} - {None}
    # one pass per field, per tenant, and one for the field names: never one per query
    assert builds <= n * (len(fields) + len(tenants) + 1), f"{builds} records read by {len(QUERIES)} queries"

    def no_scan(self: SearchFilter, chunk: ChunkRecord) -> bool:
        raise AssertionError("SearchFilter.matches called at query time")

    monkeypatch.setattr(SearchFilter, "matches", no_scan)
    chunks.examined = 0
    for flt in QUERIES * 3:
        row_mask(snapshot, flt)
    assert chunks.examined == 0, f"{chunks.examined} chunk records read by {len(QUERIES) * 3} queries"


def _scan(snapshot: IndexSnapshot, flt: SearchFilter) -> np.ndarray | None:
    """The reference: the per-chunk scan row_mask did before the field index."""
    if flt.is_empty:
        return None
    n = len(snapshot.chunks)
    mask = snapshot.tenant_rows(flt.tenant) if flt.tenant is not None else np.ones(n, bool)
    if not flt.fields:
        return mask
    rows = np.flatnonzero(mask)
    keep = np.fromiter((flt.matches(snapshot.chunks[r]) for r in rows), dtype=bool, count=len(rows))
    out = np.zeros(n, dtype=bool)
    out[rows[keep]] = True
    return out


# metadata values of every shape: the scalars a filter can equal (True apart from 1, "1" apart from 1),
# and what never matches (floats, null, lists, objects, strings past the filter limit)
VALUES: list[Any] = [
    True, False, 0, 1, 2, -1, 2**40, "1", "a", "b", "", "A", "é", 1.0, 1.5, None,
    ["a", "b"], [1], {"a": 1}, "x" * (filters.MAX_FILTER_STRING + 1), "y" * filters.MAX_FILTER_STRING,
]  # fmt: skip
FILTER_VALUES: list[Any] = [
    *(v for v in VALUES if isinstance(v, bool | int | str) and len(str(v)) <= filters.MAX_FILTER_STRING)
]


def test_field_index_mask_equals_the_scan_on_a_random_corpus() -> None:
    rng = random.Random(5)
    for trial in range(30):
        n = rng.randint(0, 300)
        chunks = [
            ChunkRecord(
                f"c{i}", f"d{i}", 0, "", "", f"p{i}",
                {f: rng.choice(VALUES) for f in ("a", "b", "c") if rng.random() < 0.7},
                rng.choice(["acme", "globex", ""]),
            )
            for i in range(n)
        ]  # fmt: skip
        snapshot = _snapshot(chunks)
        for _ in range(40):
            fields = {
                f: rng.sample(FILTER_VALUES, rng.randint(1, 4))
                if rng.random() < 0.6
                else rng.choice(FILTER_VALUES)
                for f in rng.sample(["a", "b", "c", "zz"], rng.randint(0, 3))
            }
            flt = SearchFilter.of(rng.choice([None, "acme", "globex", "", "nobody"]), fields)
            got, expected = row_mask(snapshot, flt), _scan(snapshot, flt)
            if expected is None:
                assert got is None
            else:
                assert got is not None and np.array_equal(got, expected), (trial, flt)


def test_the_row_mask_is_computed_off_the_event_loop(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Building a field index is a pass over every chunk: it runs in the retrieval step's worker thread,
    not in the event loop's thread (nor on preparing the run)."""
    snapshot = _snapshot(_corpus(200), texts=True)
    threads: list[int] = []
    original = filters.row_mask

    def recording(snapshot: IndexSnapshot, flt: SearchFilter) -> np.ndarray | None:
        threads.append(threading.get_ident())
        return original(snapshot, flt)

    monkeypatch.setattr(filters, "row_mask", recording)
    pipeline = SearchPipeline(snapshot, None, None, compute=ThreadedCompute())
    plan = plan_for(PipelineName.BM25, settings, top_k=5, reranker_available=False)

    async def main() -> tuple[int, list[str]]:
        outcome = await pipeline.run("text", plan, SearchFilter.of("acme", {"lang": "fr"}))
        return threading.get_ident(), [h.chunk_id for h in outcome.hits]

    loop_thread, hits = asyncio.run(main())
    assert hits and all(snapshot.chunk(h).metadata["lang"] == "fr" for h in hits)
    assert threads and loop_thread not in threads, "row_mask ran on the event loop's thread"


def test_unknown_fields_build_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field no chunk has matches nothing without an index: names a client makes up cost no memory."""
    snapshot = _snapshot(_corpus(50))
    for i in range(100):
        mask = row_mask(snapshot, SearchFilter.of("acme", {f"made_up_{i}": "x"}))
        assert mask is not None and not mask.any()
    assert filters.indexed_fields(snapshot) == set()


def test_filter_validation_is_unchanged() -> None:
    with pytest.raises(FilterError, match=r"filters\.k: at most 64 values"):
        SearchFilter.of(None, {"k": list(range(65))})
