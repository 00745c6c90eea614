"""Re-embedding a collection with another model (rag/index/ingest.py ``Ingestor.reembed``, the vector spaces
of rag/index/spaces.py): in place, or staged as a candidate collection and promoted reusing its vectors."""

from __future__ import annotations

import numpy as np
import pytest

from rag.config import Settings
from rag.dense.hashing import HashEmbedder
from rag.index.ingest import Ingestor
from rag.index.segments import VersionView
from rag.index.shard_sync import sync_shard
from rag.index.snapshot import IndexSnapshot
from rag.index.spaces import rotation_file_of
from rag.index.versions import VersionStore
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime, ingest_params, open_store
from tests.conftest import make_ingestor
from tests.rag.index.test_segments import doc

NEW = "hash:64#b"  # another model of the same dimension


def current(settings: Settings) -> VersionView:
    view = VersionView.load(VersionStore(settings.versions_dir))
    assert view is not None
    return view


def reembedder(settings: Settings, model: str = NEW) -> Ingestor:
    embedder = HashEmbedder(64, variant=model.partition("#")[2])
    assert embedder.name == model
    return Ingestor(ingest_params(settings), embedder, open_store(settings), progress=False)


def ingested(settings: Settings, docs: int) -> VersionView:
    """The collection built with the first model (hash:64) from ``docs`` documents; its version."""
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(docs)])
    store.close()
    return current(settings)


def candidate_of(settings: Settings) -> Settings:
    return settings.model_copy(update={"collection": f"{settings.collection}__candidate"})


def test_reembedding_in_place_moves_every_chunk_into_the_new_space(settings: Settings) -> None:
    before = ingested(settings, 12)
    ingestor = reembedder(settings)
    report = ingestor.reembed(ingestor.versions)
    after = current(settings)
    assert report.embedded == report.chunks == before.live_rows and report.reused == 0
    assert (report.from_embedder, report.embedder) == ("hash:64", NEW)
    assert after.manifest["embedder"] == NEW and after.manifest["point_space"] == NEW
    assert after.manifest["rotation_file"] == rotation_file_of(NEW)
    assert (ingestor.versions.root / rotation_file_of(NEW)).exists()
    # another space, other point ids: none shared, and the shard keeps none of the old space
    assert not before.live_points() & after.live_points() and after.live_rows == before.live_rows
    assert ingestor.store.all_ids() == after.live_points()
    with pytest.raises(ValueError, match="already"):
        ingestor.reembed(ingestor.versions)
    ingestor.store.close()

    # the service follows the version: its queries are embedded by the new model, and an ingest after
    # it embeds with it too and keeps the new space's ids (an unchanged document stays unchanged)
    runtime = Runtime.open(settings)  # RAG_EMBEDDER_MODEL is still hash:64
    try:
        assert runtime.embedder.name == NEW
        snapshot = runtime.snapshot
        assert snapshot.rotation is not None
        assert np.array_equal(snapshot.rotation, np.load(ingestor.versions.root / rotation_file_of(NEW)))
        plan = plan_for(PipelineName.DENSE, settings, top_k=3, reranker_available=False)
        outcome = runtime.pipeline.search("Document 5 talks about topic5", plan)
        assert not outcome.degraded and outcome.hits[0].doc_id == "d5"
        again = runtime.ingestor(progress=False).ingest([doc(3), doc(40)])
        assert (again.docs_unchanged, again.docs_added, again.chunks_embedded) == (1, 1, 1)
        assert current(settings).manifest["point_space"] == NEW
    finally:
        runtime.close()


def test_reembedding_back_to_the_first_model_gives_back_its_point_ids(settings: Settings) -> None:
    first = ingested(settings, 6)
    there = reembedder(settings)
    there.reembed(there.versions)
    there.store.close()
    back = reembedder(settings, "hash:64")
    back.reembed(back.versions)
    returned = current(settings)
    assert returned.live_points() == first.live_points() and returned.manifest["point_space"] == ""
    assert returned.manifest["rotation_file"] == "rotation.npy"
    back.store.close()


def test_a_model_of_another_dimension_is_refused(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(1)])
    store.close()
    other = Ingestor(ingest_params(settings), HashEmbedder(32), open_store(settings), progress=False)
    with pytest.raises(ValueError, match="new collection"):
        other.reembed(other.versions)
    other.store.close()


def test_a_staged_candidate_is_promoted_embedding_only_what_changed_since(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(20)])
    staged = reembedder(candidate_of(settings))
    report = staged.reembed(ingestor.versions)
    assert report.embedded == 20 and current(settings).manifest["embedder"] == "hash:64"  # X untouched
    candidate_rows = current(candidate_of(settings))
    assert candidate_rows.manifest["embedder"] == NEW
    staged.store.close()

    # the collection moves on while the candidate is judged: 2 added, 1 rewritten, 1 deleted
    ingestor.ingest([doc(20), doc(21), doc(4, "Document four now tells of otters.")], ["d7"])
    store.close()

    promote = reembedder(settings)
    report = promote.reembed(promote.versions, reuse=staged.versions)
    assert (report.embedded, report.reused) == (3, 18)
    promoted = current(settings)
    snap = IndexSnapshot.load(promote.versions)
    assert snap is not None and sorted(snap.doc_ids) == sorted(f"d{i}" for i in range(22) if i != 7)
    assert promoted.live_points() - candidate_rows.live_points() == {
        c.point_id for c in snap.chunks if c.doc_id in {"d20", "d21", "d4"}
    }
    # the candidate's rotation came with its vectors
    assert np.array_equal(
        np.load(promote.versions.root / rotation_file_of(NEW)),
        np.load(staged.versions.root / rotation_file_of(NEW)),
    )
    assert promote.store.all_ids() == promoted.live_points()
    promote.store.close()


def test_another_process_shard_drops_the_old_space_when_it_switches(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(10)])
    versions = VersionStore(settings.versions_dir)
    other = open_store(settings)  # the next slot: another process's shard
    other.ensure_collection(64)
    sync_shard(other, versions, current(settings))
    store.close()
    re = reembedder(settings)
    re.reembed(re.versions)
    report = sync_shard(other, versions, current(settings))
    assert not report.full and (report.added, report.deleted) == (10, 10)
    assert other.all_ids() == current(settings).live_points()
    other.close()
    re.store.close()
