"""Several processes' shards over one set of index versions (rag/index/shard_sync.py), and the leases that
keep the versions they hold on disk (rag/index/replica_leases.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from qdrant_client import QdrantClient

from rag.config import Settings
from rag.dense.edge_store import EdgeStore
from rag.dense.qdrant_store import QdrantStore
from rag.index.ingest import KEEP_VERSIONS, Ingestor
from rag.index.replica_leases import ReplicaLease, ReplicaLeases
from rag.index.segments import VECTORS_FILE, VersionView, read_vectors
from rag.index.shard_sync import ShardSyncError, SyncRecord, backfill_vectors, sync_shard
from rag.index.versions import VersionStore
from rag.runtime import build_embedder, ingest_params, open_store
from tests.conftest import make_ingestor
from tests.rag.index.test_segments import doc


def view(settings: Settings, name: str | None = None) -> VersionView:
    found = VersionView.load(VersionStore(settings.versions_dir), name)
    assert found is not None
    return found


def second_slot(settings: Settings) -> EdgeStore:
    """Another process's shard: the next free slot of the same collection."""
    store = open_store(settings)
    assert isinstance(store, EdgeStore) and store.path != settings.resolved_edge_path
    store.ensure_collection(64)
    return store


def test_a_second_shard_fills_from_the_segments_and_follows_in_o_change(settings: Settings) -> None:
    ingestor, first = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(20)])
    versions = VersionStore(settings.versions_dir)
    other = second_slot(settings)
    v1 = view(settings)
    report = sync_shard(other, versions, v1)
    assert report.full and report.added == 20 and other.all_ids() == v1.live_points()
    # the same vectors as the writer's shard: a query ranks alike in both
    query = first.stored_vectors([next(iter(v1.live_points()))])
    q = next(iter(query.values()))
    assert other.search(q, limit=5) == first.search(q, limit=5)

    ingestor.ingest([doc(0, "Document zero was rewritten about eels."), doc(20)], ["d1"])
    v2 = view(settings)
    report = sync_shard(other, versions, v2)
    assert not report.full and report.added == 2 and report.deleted == 0
    # the version it left stays whole until the next switch (queries still running on it)
    assert other.all_ids() == v1.live_points() | v2.live_points()
    assert SyncRecord.read(other.path / "synced.json") == SyncRecord(v2.name, v1.name)

    ingestor.ingest([doc(21)])
    v3 = view(settings)
    report = sync_shard(other, versions, v3)
    assert not report.full and report.added == 1 and report.deleted == 2  # d1 and d0's old point
    assert other.all_ids() == v2.live_points() | v3.live_points()
    assert sync_shard(other, versions, v3) == type(report)(v3.name, 0, 0, full=False)  # nothing to do
    first.close()
    other.close()


def test_a_sync_that_dies_half_way_is_followed_by_a_full_one(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor, first = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(20)])
    versions = VersionStore(settings.versions_dir)
    other = second_slot(settings)
    sync_shard(other, versions, view(settings))
    ingestor.ingest([doc(i, f"Document {i} now speaks of otters.") for i in range(10)], ["d15"])

    def dies(*args: object, **kwargs: object) -> None:
        raise OSError("killed")

    with monkeypatch.context() as patch:
        patch.setattr(other, "optimize", dies)  # after its upserts, before its record
        with pytest.raises(OSError):
            sync_shard(other, versions, view(settings))
    assert not (other.path / "synced.json").exists()  # no record: the next sync trusts nothing
    ingestor.ingest([doc(30)])
    v3 = view(settings)
    report = sync_shard(other, versions, v3)
    assert report.full
    assert other.all_ids() == v3.live_points() | view(settings, v3.manifest["parent"]).live_points()
    first.close()
    other.close()


def test_segments_written_without_vectors_get_them_from_the_shard_that_holds_them(settings: Settings) -> None:
    ingestor, first = make_ingestor(settings)
    ingestor.ingest([doc(i) for i in range(12)])
    versions = VersionStore(settings.versions_dir)
    v1 = view(settings)
    (segment,) = v1.segments
    original = np.array(read_vectors(versions.segments_root / segment))
    (versions.segments_root / segment / VECTORS_FILE).unlink()  # as written before segments held vectors
    other = second_slot(settings)
    with pytest.raises(ShardSyncError, match="has no vectors"):
        sync_shard(other, versions, v1)
    assert backfill_vectors(first, versions, v1) == [segment]
    np.testing.assert_array_equal(read_vectors(versions.segments_root / segment), original)
    assert sync_shard(other, versions, v1).added == 12
    first.close()
    other.close()


def lease(name: str, version: str, now: float, ttl: float = 10.0) -> ReplicaLease:
    return ReplicaLease(name, version, 1, "host", now - 100, now - 50, now, now + ttl)


def test_the_ingest_keeps_the_versions_live_replicas_serve(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest([doc(0)])
    held = view(settings).name
    leases = ReplicaLeases(settings.versions_dir)  # the wall clock, as the ingest reads them
    leases.renew(lease("slow", held, time.time(), ttl=3600))
    for i in range(1, 5):
        ingestor.ingest([doc(i)])
    versions = VersionStore(settings.versions_dir)
    # the newest KEEP_VERSIONS, plus the one the slow replica serves
    assert held in versions.folders() and len(versions.folders()) == KEEP_VERSIONS + 1
    other = second_slot(settings)  # the slow replica's shard, on the version it holds
    assert sync_shard(other, versions, view(settings, held)).added == 1
    assert not sync_shard(other, versions, view(settings)).full  # it catches up in O(change)

    leases.renew(lease("slow", held, time.time(), ttl=-1))  # its lease expired: nothing protects it now
    assert leases.live() == [] and leases.versions() == set()
    ingestor.ingest([doc(9)])
    assert held not in VersionStore(settings.versions_dir).folders()
    store.close()
    other.close()


def test_leases_are_listed_renewed_released_and_forgotten(tmp_path: Path) -> None:
    clock = [1000.0]
    leases = ReplicaLeases(tmp_path, clock=lambda: clock[0])
    leases.renew(lease("a", "v000001", 1000.0))
    leases.renew(lease("b/../x", "v000002", 1000.0, ttl=1))  # a name that is no path
    assert [x.replica for x in leases.all()] == ["a", "b/../x"]
    assert all(p.parent == tmp_path / "replicas" for p in (tmp_path / "replicas").iterdir())
    clock[0] = 1002.0
    assert [x.replica for x in leases.live()] == ["a"] and leases.versions() == {"v000001"}
    leases.renew(lease("a", "v000003", 1002.0))  # renewal replaces
    assert leases.versions() == {"v000003"}
    clock[0] = 1002.0 + 4000
    assert leases.all() == []  # long expired: deleted
    leases.release("a")
    assert not list((tmp_path / "replicas").glob("*.json"))


def test_a_shared_store_keeps_the_points_of_the_versions_live_replicas_serve(
    settings: Settings, tmp_path: Path
) -> None:
    # a collection every replica queries (a Qdrant server; here qdrant-client's local mode, marked shared)
    store = QdrantStore(
        QdrantClient(path=str(tmp_path / "shared")),
        "test",
        sync_record=tmp_path / "store-synced.json",
        per_process=False,
    )
    ingestor = Ingestor(ingest_params(settings), build_embedder(settings), store, progress=False)
    ingestor.ingest([doc(0), doc(1)])
    served = view(settings)
    leases = ReplicaLeases(settings.versions_dir)
    leases.renew(lease("slow", served.name, time.time(), ttl=3600))
    for i in range(3):
        ingestor.ingest([doc(0, f"Document zero, edition {i}.")])
    assert served.live_points() <= store.all_ids()  # the slow replica still finds every point it serves
    leases.renew(lease("slow", served.name, time.time(), ttl=-1))
    ingestor.ingest([doc(0, "Document zero, the last edition.")])
    dropped = served.live_points() - view(settings).live_points()  # d0's first edition
    assert dropped and not dropped & store.all_ids()  # collected once no live replica serves it
    store.close()


def test_two_writers_at_once_both_publish_one_after_the_other(settings: Settings) -> None:
    first_ingestor, first = make_ingestor(settings)
    first_ingestor.ingest([doc(0)])
    second_ingestor, second = make_ingestor(settings)  # another process: its own shard slot
    versions = VersionStore(settings.versions_dir)
    held = threading.Event()
    results: list[str] = []

    def slow_writer() -> None:  # holds the writer lock a while, as a long ingest does
        with versions.lock():
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=slow_writer)
    holder.start()
    held.wait()
    writers = [
        threading.Thread(target=lambda i=i, ing=ing: results.append(ing.ingest([doc(i)]).version))
        for i, ing in ((1, first_ingestor), (2, second_ingestor))
    ]
    for w in writers:
        w.start()
    for w in [holder, *writers]:
        w.join()
    assert sorted(results) == ["v000002", "v000003"]  # neither refused: each waited its turn
    assert view(settings).live_rows == 3  # d0, d1, d2: the second writer built on the first one's version
    first.close()
    second.close()
