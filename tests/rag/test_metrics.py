"""The metric set: bounded labels, and multi-process mode aggregating every worker's samples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prometheus_client import REGISTRY

from rag import metrics

WORKERS = """
import multiprocessing, os, sys
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]
from rag import metrics

def work():
    metrics.QUERIES.labels("acme", "hybrid", "ok", "miss").inc()
    metrics.ERRORS.labels("qdrant", "timeout").inc()

if __name__ == "__main__":
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=work) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    body, content_type = metrics.exposition()
    print(body.decode())
"""


def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    script = tmp_path / "workers.py"
    script.write_text(WORKERS)
    out = subprocess.run(
        [sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in out.splitlines()
        if line and line[:1] != "#"
    }
    assert lines['rag_queries_total{cache="miss",route="hybrid",status="ok",tenant="acme"}'] == 3.0
    assert lines['rag_errors_total{component="qdrant",type="timeout"}'] == 3.0


def test_single_process_exposition_is_the_default_registry() -> None:
    metrics.ERRORS.labels("api", "RuntimeError").inc()
    body, content_type = metrics.exposition()
    assert b"rag_errors_total" in body and content_type.startswith("text/plain")
    assert REGISTRY.get_sample_value("rag_errors_total", {"component": "api", "type": "RuntimeError"}) >= 1


def test_labels_are_from_bounded_vocabularies() -> None:
    """No metric takes a query text, request id or document id as a label."""
    unbounded = {"query", "request_id", "doc_id", "text", "session_id", "user"}
    for collector in list(REGISTRY._names_to_collectors.values()):
        labels = set(getattr(collector, "_labelnames", ()))
        assert not labels & unbounded, (collector, labels)
