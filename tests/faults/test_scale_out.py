"""Two `rag serve` processes sharing one Redis and one index (each its own copy of the same published
version: embedded Qdrant locks its folder to one process): an answer cached through one is an L2 hit
through the other, and a breaker opened in one is seen open by the other."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.testing.servers import RedisServer, free_port, wait_for_port
from tests.api.conftest import ACME, ACME_DOCS, ACME_KEY, ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.integration


def env_for(data_dir: Path, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_COLLECTION="shared",
        RAG_EMBEDDER_MODEL="hash:64",
        RAG_REDIS_URL=redis_url,
        RAG_API_KEYS=f"acme:{ACME_KEY}",
        RAG_ADMIN_TOKEN=ADMIN_TOKEN,
        RAG_CACHE_THRESHOLD="0.8",
        RAG_CACHE_SECRET="scale-out-cache-secret-0123456789",  # answers are shared only when signed
        RAG_BREAKER_SYNC_MS="100",
        RAG_LOG_LEVEL="WARNING",
    )
    return env


@pytest.fixture
def two_replicas(tmp_path: Path, redis_process: RedisServer) -> Iterator[tuple[str, str]]:
    corpus = tmp_path / "acme.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], **d}) + "\n" for d in ACME_DOCS))
    first = tmp_path / "replica-1"
    subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(corpus), "--tenant", "acme"],
        env=env_for(first, redis_process.url),
        check=True,
        capture_output=True,
    )
    second = tmp_path / "replica-2"
    shutil.copytree(first, second)  # the same published version, for a second process
    procs, urls = [], []
    try:
        for data_dir in (first, second):
            port = free_port()
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "rag", "serve", "--port", str(port)],
                    env=env_for(data_dir, redis_process.url),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for proc, url in zip(procs, urls, strict=True):
            wait_for_port(int(url.rsplit(":", 1)[1]), timeout_s=60)
            deadline = time.monotonic() + 60
            while httpx.get(f"{url}/ready").status_code != 200:
                assert proc.poll() is None, "rag serve exited"
                assert time.monotonic() < deadline, "not ready in 60 s"
                time.sleep(0.1)
        yield urls[0], urls[1]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=20)


def test_cache_and_breakers_are_shared_between_replicas(two_replicas: tuple[str, str]) -> None:
    one, two = two_replicas
    q1 = httpx.post(f"{one}/query", json={"query": "Which animal hunts mice at night?"}, headers=ACME).json()
    assert q1["cache"] == "miss"
    q2 = httpx.post(f"{two}/query", json={"query": "at night, which animal hunts mice?"}, headers=ACME).json()
    assert q2["cache"] == "l2" and q2["results"] == q1["results"]
    assert q2["index_version"] == q1["index_version"]

    r = httpx.post(f"{one}/admin/breakers/qdrant", json={"state": "open"}, headers=ADMIN)
    assert r.status_code == 200 and r.json()["state"] == "open"
    deadline = time.monotonic() + 5
    while True:
        states = {b["name"]: b for b in httpx.get(f"{two}/admin/breakers", headers=ADMIN).json()}
        if states["qdrant"]["state"] == "open":
            break
        assert time.monotonic() < deadline, "replica 2 never saw the breaker open"
        time.sleep(0.05)
    assert "opened by replica" in states["qdrant"]["reason"]
    # replica 2 now answers without the vector store, and says so
    body = httpx.post(f"{two}/query", json={"query": "who makes honey"}, headers=ACME).json()
    assert ("retrieve.dense", "breaker_open") in {(d["step"], d["code"]) for d in body["degraded"]}
