"""Ingestion: versions, idempotent upserts, updates, deletes, garbage collection, folder sources."""

from pathlib import Path

import pytest

from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import NoIndexError, Runtime
from rag.types import Document
from tests.conftest import ANIMALS, make_ingestor


def search_ids(settings, text: str, pipeline: str = "hybrid", k: int = 3) -> list[str]:
    runtime = Runtime.open(settings, load_reranker=False)
    try:
        plan = plan_for(PipelineName.from_str(pipeline), settings, top_k=k, reranker_available=False)
        return [h.doc_id for h in runtime.pipeline.search(text, plan).hits[:k]]
    finally:
        runtime.close()


def test_first_ingest_publishes_version_one(settings) -> None:
    ingestor, store = make_ingestor(settings)
    report = ingestor.ingest(ANIMALS)
    store.close()
    assert (report.version, report.docs_added, report.chunks_embedded) == ("v000001", 6, 6)
    assert VersionStore(settings.versions_dir).current() == "v000001"
    assert search_ids(settings, "honey pollinate flowers")[0] == "bee"
    assert search_ids(settings, "honey pollinate flowers", "dense")[0] == "bee"


def test_reingesting_the_same_documents_is_a_no_op(settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    again = ingestor.ingest(list(reversed(ANIMALS)))
    count = store.count()
    store.close()
    assert (again.version, again.docs_unchanged, again.chunks_embedded) == ("v000001", 6, 0)
    assert count == 6


def test_update_and_delete_publish_a_new_version_and_collect_garbage(settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    changed = Document("dog", "Dogs fetch frisbees in the park and guard houses.", "Dog")
    report = ingestor.ingest([changed, Document("ant", "Ants build colonies underground.", "Ant")], ["whale"])
    assert (report.version, report.docs_added, report.docs_updated, report.docs_deleted) == (
        "v000002",
        1,
        1,
        1,
    )
    assert report.chunks_embedded == 2 and report.chunks_total == 6
    # v2's points plus v1's superseded ones (kept while v1 may still be serving) remain
    assert store.count() == 6 + 2
    third = ingestor.ingest([], ["ant", "missing-id"])
    assert (third.docs_deleted, third.docs_missing_for_delete) == (1, 1)
    assert store.count() == 5 + 1  # v1-only points are collected once v1 is neither current nor previous
    store.close()
    snap = IndexSnapshot.load(VersionStore(settings.versions_dir))
    assert snap is not None and sorted(snap.doc_ids) == ["bee", "cat", "dog", "owl", "salmon"]
    assert search_ids(settings, "frisbee park")[0] == "dog"
    assert "whale" not in search_ids(settings, "whales sing underwater songs", k=10)
    assert VersionStore(settings.versions_dir).published() == ["v000002", "v000003"]


def test_long_documents_are_chunked_and_found_by_any_chunk(settings) -> None:
    settings = settings.model_copy(update={"chunk_words": 20, "chunk_overlap_words": 5})
    filler = " ".join(f"filler{i}" for i in range(60))
    doc = Document("long", f"{filler} the zeppelin airship floats", "Long")
    ingestor, store = make_ingestor(settings)
    report = ingestor.ingest([doc, *ANIMALS])
    store.close()
    assert report.chunks_total == 6 + 4  # 64 words in windows of 20 overlapping by 5
    assert search_ids(settings, "zeppelin airship", "bm25")[0] == "long"
    assert search_ids(settings, "zeppelin airship", "dense")[0] == "long"


def test_text_folder_ingest(settings, tmp_path: Path) -> None:
    from rag.io.sources import read_documents

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.md").write_text("# Kettle descaling\nUse vinegar to descale a kettle.")
    (folder / "sub" / "b.txt").write_text("Bicycle chains need oil every month.")
    (folder / "ignored.bin").write_bytes(b"\x00\x01")
    docs = list(read_documents(folder))
    assert [(d.doc_id, d.title) for d in docs] == [("a.md", "Kettle descaling"), ("sub/b.txt", "b")]
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(docs)
    store.close()
    assert search_ids(settings, "descale kettle", k=1) == ["a.md"]


def test_embedder_mismatch_is_refused(settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS[:2])
    store.close()
    other = settings.model_copy(update={"embedder_model": "hash:32"})
    ingestor2, store2 = make_ingestor(other)
    with pytest.raises(ValueError, match="was built with embedder='hash:64'"):
        ingestor2.ingest(ANIMALS[2:])
    store2.close()


def test_opening_an_empty_collection_says_what_to_do(settings) -> None:
    with pytest.raises(NoIndexError, match="run `rag ingest PATH` first"):
        Runtime.open(settings)


def test_bad_input_writes_nothing(settings, tmp_path: Path) -> None:
    from rag.io.sources import SourceError, read_documents

    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "a", "text": "ok"}\n{"_id": "", "text": "x"}\n')
    ingestor, store = make_ingestor(settings)
    with pytest.raises(SourceError, match=r"corpus.jsonl:2: field '_id' must be a non-empty string"):
        ingestor.ingest(read_documents(bad))
    assert store.count() == 0 and not settings.resolved_edge_path.exists()
    store.close()
    assert not settings.versions_dir.exists() or not any(settings.versions_dir.iterdir())


def test_bad_jsonl_names_file_line_and_field(tmp_path: Path) -> None:
    from rag.io.sources import SourceError, read_documents

    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"_id": "a", "text": "ok"}\n{"_id": "b", "text": 5}\n')
    with pytest.raises(SourceError, match=r"corpus.jsonl:2: field 'text' must be a string"):
        list(read_documents(bad))
