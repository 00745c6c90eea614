"""Versions over shared segments: a publish writes what changed; a version reads identically however it was
built; a crash between writing a segment and publishing leaves the previous version serving."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from rag.config import Settings
from rag.index import versions as versions_module
from rag.index.chunk_table import write_chunks
from rag.index.segments import VersionView, merge_plan
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.types import Document
from tests.conftest import ANIMALS, make_ingestor

QUERIES = ["hunt mice at night", "honey flowers", "fish swim rivers ocean", "mammals", "zzz unknown"]


def doc(i: int, text: str = "") -> Document:
    return Document(
        f"d{i}", text or f"Document {i} talks about topic{i % 7} and shared words mice honey.", f"T{i}"
    )


def snapshot(settings: Settings) -> IndexSnapshot:
    snap = IndexSnapshot.load(VersionStore(settings.versions_dir))
    assert snap is not None
    return snap


def bm25_scores(snap: IndexSnapshot) -> dict[str, list[tuple[str, float]]]:
    out = {}
    for q in QUERIES:
        scores = snap.bm25.scores(snap.analyzer.tokens(q))
        out[q] = [(snap.chunks[i].chunk_key, float(scores[i])) for i in range(len(snap.chunks))]
    return out


def test_merge_plan_keeps_few_segments() -> None:
    assert merge_plan([100]) == 0
    assert merge_plan([1000, 100]) == 0
    assert merge_plan([1000, 100, 100]) == 2
    assert merge_plan([1000, 300, 100, 100]) == 4  # 100+100, then 300 <= 2 * 200, then 1000 <= 2 * 500
    assert merge_plan([5000, 300, 100, 100]) == 3
    assert merge_plan([100, 100]) == 2
    assert merge_plan([1000], deleted=251) == 1  # a quarter deleted: compact, even a single segment
    assert merge_plan([1000, 10], deleted=250) == 0
    sizes: list[int] = []
    for _ in range(1000):  # a thousand 100-row publishes
        sizes.append(100)
        k = merge_plan(sizes)
        if k:
            sizes[-k:] = [sum(sizes[-k:])]
    assert len(sizes) <= 11 and sum(sizes) == 100_000  # O(log N) segments


def test_a_publish_writes_the_new_rows_and_lists_the_old_segment(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(40)])
    ingestor.ingest([doc(40), doc(3, "Document three rewritten about whales.")], ["d5"])
    store.close()
    versions = VersionStore(settings.versions_dir)
    manifest = json.loads((versions.path("v000002") / "manifest.json").read_text())
    assert [s["rows"] for s in manifest["segments"]] == [40, 2]  # the old segment is listed, not rewritten
    assert manifest["segments"][0]["name"] == "seg-v000001-0"
    assert (manifest["deleted_rows"], manifest["chunks"], manifest["docs"]) == (2, 40, 40)
    snap = snapshot(settings)
    keys = [c.doc_id for c in snap.chunks]
    assert keys == [f"d{i}" for i in range(40) if i not in (3, 5)] + ["d40", "d3"]


def test_deletes_alone_are_compacted_away(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(20)])
    ingestor.ingest([], [f"d{i}" for i in range(4)])  # 20%: kept as masked rows
    ingestor.ingest([], ["d4", "d5"])  # 30%: the segment is rewritten without them
    store.close()
    versions = VersionStore(settings.versions_dir)
    manifest = json.loads((versions.path("v000003") / "manifest.json").read_text())
    assert (manifest["segments"][0]["rows"], manifest["deleted_rows"]) == (14, 0)
    assert [c.doc_id for c in snapshot(settings).chunks] == [f"d{i}" for i in range(6, 20)]


def test_a_version_reads_the_same_built_incrementally_or_from_scratch(
    settings: Settings, tmp_path: Path
) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(30)] + ANIMALS)
    for step in range(12):  # small updates and deletes: segments are added, masked and merged
        upserts = [doc(100 + step), doc(step, f"Rewritten {step} about honey bees and owls at night.")]
        ingestor.ingest(upserts, [f"d{20 + step}"] if step < 8 else [])
    store.close()
    incremental = snapshot(settings)
    segments = json.loads(
        (VersionStore(settings.versions_dir).path(incremental.version) / "manifest.json").read_text()
    )["segments"]
    assert 1 < len(segments) < 8  # merged along the way

    # from scratch: the same documents, in the order the incremental version holds them
    scratch_settings = settings.model_copy(update={"data_dir": tmp_path / "scratch"})
    by_id = {d.doc_id: d for d in [doc(i) for i in range(30)] + ANIMALS}
    for step in range(12):
        by_id[f"d{100 + step}"] = doc(100 + step)
        by_id[f"d{step}"] = doc(step, f"Rewritten {step} about honey bees and owls at night.")
    ordered = [by_id[d] for d in dict.fromkeys(c.doc_id for c in incremental.chunks)]
    ingestor, store = make_ingestor(scratch_settings)
    ingestor.ingest(ordered)
    store.close()
    scratch = snapshot(scratch_settings)

    assert incremental.chunks == scratch.chunks
    assert bm25_scores(incremental) == bm25_scores(scratch)  # bitwise: same rows, same order, same stats
    for q in QUERIES:
        assert incremental.bm25.search(q, 10) == scratch.bm25.search(q, 10)


class _Crash(Exception):
    pass


def test_a_crash_between_writing_a_segment_and_publishing_leaves_the_previous_version(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(10)])
    before = snapshot(settings)
    real = VersionStore.publish

    def crash(self: VersionStore, staging: Path, name: str) -> None:
        raise _Crash("killed after the segment was written, before the version was published")

    with monkeypatch.context() as patch:
        patch.setattr(VersionStore, "publish", crash)
        with pytest.raises(_Crash):
            ingestor.ingest([doc(10), doc(2, "changed text about owls")], ["d4"])
    versions = VersionStore(settings.versions_dir)
    assert versions.current() == "v000001"
    assert (versions.segments_root / "seg-v000002-0").is_dir()  # the delta is on disk, unpublished
    after = snapshot(settings)
    assert after.chunks == before.chunks and after.version == "v000001"

    monkeypatch.setattr(VersionStore, "publish", real)
    report = ingestor.ingest([doc(11)])
    store.close()
    assert report.version == "v000002"
    snap = snapshot(settings)
    assert [c.doc_id for c in snap.chunks] == [f"d{i}" for i in range(10)] + ["d11"]
    assert versions.segment_names() == ["seg-v000001-0", "seg-v000002-0"]
    # the crashed ingest's points (d10, the new d2) were collected: only v1's and v2's remain
    assert store_count(settings) == 11


def store_count(settings: Settings) -> int:
    from rag.runtime import open_store

    store = open_store(settings)
    try:
        return store.count()
    finally:
        store.close()


def test_a_crash_between_the_version_rename_and_current(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(10)])
    real = versions_module.write_json_atomic

    def write(path: Path, data: object) -> None:
        if path.name == "CURRENT":
            raise _Crash("killed between the folder rename and CURRENT")
        real(path, data)

    with monkeypatch.context() as patch:
        patch.setattr(versions_module, "write_json_atomic", write)
        with pytest.raises(_Crash):
            ingestor.ingest([doc(10)])
    assert VersionStore(settings.versions_dir).current() == "v000001"
    assert len(snapshot(settings).chunks) == 10
    ingestor.ingest([doc(12)])
    store.close()
    assert [c.doc_id for c in snapshot(settings).chunks][-1] == "d12"
    assert len(snapshot(settings).chunks) == 11


def test_a_version_in_the_whole_table_layout_is_read_and_grown(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(8)])
    store.close()
    versions = VersionStore(settings.versions_dir)
    current = snapshot(settings)
    # rewrite v000001 as the layout before segments wrote it
    folder = versions.path("v000001")
    manifest = json.loads((folder / "manifest.json").read_text())
    for key in ("segments", "deleted_rows"):
        manifest.pop(key)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    write_chunks(folder / "chunks.jsonl", current.chunks)
    current.terms.save(folder)
    for seg in versions.segment_names():
        import shutil

        shutil.rmtree(versions.segments_root / seg)
    legacy = snapshot(settings)
    assert legacy.chunks == current.chunks
    view = VersionView.load(versions)
    assert view is not None and view.legacy is not None

    ingestor, store = make_ingestor(settings)
    report = ingestor.ingest([doc(8)], ["d1"])
    store.close()
    assert report.version == "v000002"
    grown = snapshot(settings)
    assert [c.doc_id for c in grown.chunks] == [f"d{i}" for i in range(9) if i != 1]
    width = current.terms.tf.shape[1]  # the vocabulary only grows: old term ids are kept
    assert grown.terms.vocab[:width] == current.terms.vocab
    np.testing.assert_array_equal(
        grown.terms.tf[:7].toarray()[:, :width], current.terms.tf[[0, 2, 3, 4, 5, 6, 7]].toarray()
    )


def test_a_crashed_publish_stores_no_point_and_the_next_ingest_reuses_its_vectors(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(5)])
    with monkeypatch.context() as patch:
        patch.setattr(VersionStore, "publish", lambda self, staging, name: (_ for _ in ()).throw(_Crash()))
        with pytest.raises(_Crash):
            ingestor.ingest([doc(7)])
    assert store.count() == 5  # points reach a shard only from a published version
    report = ingestor.ingest([doc(i) for i in range(5)])  # the same documents: nothing to publish
    assert report.version == "v000001" and store.count() == 5
    report = ingestor.ingest([doc(7)])
    assert report.version == "v000002"
    assert report.chunks_embedded == 0  # d7's vector, computed before the crash, was kept
    assert store.count() == 6
    assert not (settings.versions_dir / ".pending-vectors").exists()
    store.close()
