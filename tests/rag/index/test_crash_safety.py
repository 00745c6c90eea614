"""Kill an ingest mid-way: the previous version keeps serving, and the next ingest recovers."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.types import Document
from tests.conftest import ANIMALS, make_ingestor, write_beir
from tests.rag.index.test_ingest import search_ids


def test_killed_ingest_leaves_previous_version_serving(settings, tmp_path: Path) -> None:
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(ANIMALS)
    store.close()

    extra = [
        Document(f"planet{i}", f"Planet number {i} orbits a distant star zorblax.", f"P{i}")
        for i in range(600)
    ]
    folder = write_beir(tmp_path / "big", extra, {}, {})
    env = {
        **os.environ,
        "RAG_DATA_DIR": str(settings.data_dir),
        "RAG_COLLECTION": settings.collection,
        "RAG_EMBEDDER_MODEL": "hash:64:0.005",  # 5 ms per text: ~3 s for the whole ingest
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag", "-v", "ingest", str(folder), "--quiet"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # wait until some vectors of the new batch are computed (and spilled)
        if "embedded 256/600" in line:
            break
        assert time.monotonic() < deadline, "ingest never reported progress"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    versions = VersionStore(settings.versions_dir)
    assert versions.current() == "v000001"
    snap = IndexSnapshot.load(versions)
    assert snap is not None and len(snap.doc_ids) == 6
    # the half-done ingest is invisible to the serving version
    assert not any(
        d.startswith("planet") for d in search_ids(settings, "planet orbits star zorblax", "dense", k=10)
    )
    assert not any(
        d.startswith("planet") for d in search_ids(settings, "planet orbits star zorblax", "bm25", k=10)
    )

    # the next ingest finishes the job (reusing the vectors already computed) and cleans up
    ingestor, store = make_ingestor(settings)
    report = ingestor.ingest(extra)
    assert report.version == "v000002" and report.chunks_embedded == 600 - 256
    assert store.count() == 606
    store.close()
    assert not list(settings.versions_dir.glob(".staging-*"))
    assert search_ids(settings, "planet orbits star zorblax", "bm25", k=1)[0].startswith("planet")
