"""`rag serve --workers 2` on the embedded engine and no Redis: feedback reaches whichever worker it lands
on. Each request comes on a new connection, so the kernel hands queries and feedback to either worker;
the pending decisions live in the data dir's SQLite file (rag/bandit/pending_sqlite.py), so every
feedback for a routed answer is accepted, once — with decisions kept per worker, about half would be 404.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rag.testing.servers import free_port, wait_for_port
from tests.api.conftest import ACME, ACME_DOCS, ACME_KEY, ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.integration

COLLECTION = "workers"
QUERIES = [
    f"{verb} {thing}"
    for verb in ("who hunts", "what eats", "which animal likes", "where do")
    for thing in ("mice", "flowers at night", "honey", "small mammals", "birds of prey")
]  # 20 distinct texts: none is served from the cache (a cached answer ran no plan and awaits no feedback)


def live_workers(url: str) -> int:
    """Workers with a live lease (a worker renews it once loaded); 0 while the one answering loads."""
    r = httpx.get(f"{url}/admin/index", headers=ADMIN)
    return sum(x["live"] for x in r.json()["replicas"]) if r.status_code == 200 else 0


def test_feedback_for_answers_of_either_worker_is_accepted_by_either_once(tmp_path: Path) -> None:
    corpus = tmp_path / "acme.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], **d}) + "\n" for d in ACME_DOCS))
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}  # no Redis
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_COLLECTION=COLLECTION,
        RAG_EMBEDDER_MODEL="hash:64",
        RAG_API_KEYS=f"acme:{ACME_KEY}",
        RAG_ADMIN_TOKEN=ADMIN_TOKEN,
        RAG_RATE_LIMIT_QPS="1000",
    )
    subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(corpus), "--tenant", "acme"],
        env=env,
        check=True,
        capture_output=True,
    )
    port, log = free_port(), tmp_path / "workers.log"
    url = f"http://127.0.0.1:{port}"
    with log.open("ab") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rag", "serve", "--port", str(port), "--workers", "2"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        wait_for_port(port, timeout_s=60)
        deadline = time.monotonic() + 60
        while live_workers(url) < 2:  # each loads on its own: /ready from one says nothing of the other
            assert proc.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, "both workers not serving in 60 s"
            time.sleep(0.1)
        answered = []
        for query in QUERIES:  # httpx.post opens a new connection each time: either worker answers
            r = httpx.post(f"{url}/query", json={"query": query, "top_k": 3}, headers=ACME, timeout=30)
            assert r.status_code == 200, r.text
            assert r.json()["cache"] == "miss"
            answered.append(r.json()["request_id"])
        statuses = [
            httpx.post(f"{url}/feedback", json={"request_id": rid, "rating": 4}, headers=ACME, timeout=30)
            for rid in answered
        ]
        assert [s.status_code for s in statuses] == [200] * len(answered), [s.text for s in statuses]
        again = httpx.post(f"{url}/feedback", json={"request_id": answered[0], "rating": 4}, headers=ACME)
        assert again.status_code == 404  # taken once
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    db = data_dir / "feedback" / f"{COLLECTION}-pending.sqlite"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM pending").fetchone() == (0,)  # every decision taken
    conn.close()
