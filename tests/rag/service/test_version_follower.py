"""A serving process follows what another process publishes, and renews its lease (rag/service/
version_follower.py); driven step by step with a test clock (the background loop is off)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from api.app import create_app
from rag import metrics
from rag.index.ingest import Ingestor
from rag.index.replica_leases import ReplicaLeases
from rag.runtime import build_embedder, ingest_params, open_store
from rag.service.version_follower import VersionFollower
from rag.types import Document
from tests.api.conftest import ACME_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


def other_process_ingests(settings, docs: list[Document]) -> str:  # type: ignore[no-untyped-def]
    """An ingest by another process: its own shard slot (the service holds the first)."""
    store = open_store(settings)
    try:
        report = Ingestor(ingest_params(settings), build_embedder(settings), store, progress=False).ingest(
            docs
        )
    finally:
        store.close()
    return report.version


async def test_a_follower_switches_to_another_process_publish_and_renews_its_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings(tmp_path, monkeypatch, version_poll_ms=0, replica_id="me")
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        service = app.state.service
        assert service.follower is None  # RAG_VERSION_POLL_MS=0: not following
        clock = [1000.0]
        follower = VersionFollower(
            service.lifecycle, replica="me", poll_s=0.5, lease_s=10, clock=lambda: clock[0]
        )
        served = follower.served_version()
        await follower.step()
        leases = ReplicaLeases(settings.versions_dir, clock=lambda: clock[0])
        (lease,) = leases.live()
        assert (lease.replica, lease.version, lease.expires_at) == ("me", served, 1010.0)

        version = other_process_ingests(
            settings, [Document("eel", "Eels are long fish that swim upriver.", "Eel", tenant="acme")]
        )
        assert version != served
        clock[0] += 0.5
        await follower.step()
        assert follower.served_version() == version and follower.switches == 1
        assert leases.live()[0].version == version
        r = await client.post(
            "/query",
            json={"query": "fish swim upriver"},
            headers={"Authorization": "Bearer acme-key-0123456789abcdef"},
        )
        assert r.json()["index_version"] == version and "eel" in {h["doc_id"] for h in r.json()["results"]}
        await follower.close()
        assert leases.all() == []  # released


async def test_a_replica_whose_lease_lapsed_checks_its_shard_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = service_settings(tmp_path, monkeypatch, version_poll_ms=0)
    app = create_app(settings)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        lifecycle = app.state.service.lifecycle
        clock = [1000.0]
        follower = VersionFollower(lifecycle, replica="me", poll_s=0.5, lease_s=10, clock=lambda: clock[0])
        await follower.step()
        store = lifecycle.store
        live = store.all_ids()
        orphan = "00000000-0000-5000-8000-000000000001"  # a point no version holds (left by a lost write)
        vector = np.zeros((1, 64), dtype=np.float32)
        vector[0, 0] = 1.0
        store.upsert([orphan], vector, [{"tenant": "acme"}])
        before = metrics.REPLICA_LEASE_LAPSES._value.get()
        clock[0] += 5
        await follower.step()  # renewed in time: the record is trusted
        assert orphan in store.all_ids()
        clock[0] += 30  # stopped past its lease
        await follower.step()
        assert metrics.REPLICA_LEASE_LAPSES._value.get() == before + 1
        assert store.all_ids() == live  # compared in full: the orphan is gone, every point is there
        await follower.close()
