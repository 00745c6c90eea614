"""Three `rag serve` processes on one data dir and one Redis: a publish through any of them reaches all.

Each process holds its own vector shard (the embedded engine locks a folder to one process) and follows the
published version (rag/service/version_follower.py): ingest and delete through replica 1, and replicas 2
and 3 answer from the new version within 2 s — the new document found, the deleted one never, by hybrid
retrieval and by BM25 alone — and every replica lists all three on it. A replica killed while it switches
comes back on the newest version; a Redis outage during a publish changes nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from rag.dense.edge_store import EdgeStore
from rag.index.segments import VersionView
from rag.index.shard_sync import SyncRecord
from rag.index.versions import VersionStore
from rag.resilience.redis import RedisKeys
from rag.testing.servers import RedisServer, free_port, wait_for_port
from tests.api.conftest import ACME, ACME_DOCS, ACME_KEY, ADMIN, ADMIN_TOKEN

pytestmark = pytest.mark.integration

COLLECTION = "shared"
FOLLOW_WITHIN_S = 2.0  # the bound: a publish visible on every replica


def env_for(data_dir: Path, redis_url: str, replica: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_COLLECTION=COLLECTION,
        RAG_EMBEDDER_MODEL="hash:64",
        RAG_REDIS_URL=redis_url,
        RAG_API_KEYS=f"acme:{ACME_KEY}",
        RAG_ADMIN_TOKEN=ADMIN_TOKEN,
        RAG_REPLICA_ID=replica,
        RAG_BREAKER_SYNC_MS="100",
        RAG_RATE_LIMIT_QPS="1000",
        RAG_LOG_LEVEL="INFO",
    )
    return env


@dataclass
class Replica:
    name: str
    url: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    port: int = field(default=0)

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rag", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=out,
            )

    def wait_ready(self, timeout_s: float = 60) -> None:
        wait_for_port(self.port, timeout_s=timeout_s)
        deadline = time.monotonic() + timeout_s
        while httpx.get(f"{self.url}/ready").status_code != 200:
            assert self.proc is not None and self.proc.poll() is None, f"{self.name} exited"
            assert time.monotonic() < deadline, f"{self.name} not ready in {timeout_s} s"
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def index(self) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/admin/index", headers=ADMIN, timeout=10)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body

    def doc_ids(self, query: str) -> tuple[set[str], dict[str, Any]]:
        r = httpx.post(f"{self.url}/query", json={"query": query, "top_k": 10}, headers=ACME, timeout=10)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return {hit["doc_id"] for hit in body["results"]}, body


@contextmanager
def three_replicas(tmp_path: Path, redis_url: str, **extra: str) -> Iterator[list[Replica]]:
    corpus = tmp_path / "acme.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], **d}) + "\n" for d in ACME_DOCS))
    data_dir = tmp_path / "data"
    subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(corpus), "--tenant", "acme"],
        env=env_for(data_dir, redis_url, "cli"),
        check=True,
        capture_output=True,
    )
    group = []
    for name in ("r1", "r2", "r3"):
        port = free_port()
        env = {**env_for(data_dir, redis_url, name), **extra}
        group.append(Replica(name, f"http://127.0.0.1:{port}", env, tmp_path / f"{name}.log", port=port))
    try:
        for replica in group:
            replica.start()
        for replica in group:
            replica.wait_ready()
        yield group
    finally:
        for replica in group:
            replica.stop()


@pytest.fixture
def replicas(tmp_path: Path, redis_process: RedisServer) -> Iterator[list[Replica]]:
    with three_replicas(tmp_path, redis_process.url) as group:
        yield group


NEW_DOC = {
    "id": "axolotl",
    "title": "Axolotl",
    "text": "Axolotls are salamanders that regrow limbs in mountain lakes.",
}
NEW_QUERY = "salamanders regrow limbs"
DELETED = "bee"
DELETED_QUERY = "flying insects pollinate flowers honey"


def publish_through(replica: Replica) -> str:
    """Upsert NEW_DOC and delete DELETED through ``replica``'s admin route; the published version."""
    return publish_job(replica)[0]


def publish_job(replica: Replica) -> tuple[str, str]:
    """As :func:`publish_through`; the version and the job's id."""
    r = httpx.post(
        f"{replica.url}/admin/tenants/acme/documents",
        json={"upsert": [NEW_DOC], "delete": [DELETED]},
        headers=ADMIN,
        timeout=60,
    )
    assert r.status_code == 200, r.text
    version: str = r.json()["job"]["index_version"]
    assert version is not None
    return version, str(r.json()["job"]["id"])


def sees_new_version(replica: Replica, version: str) -> bool:
    """True once ``replica`` answers from ``version``: then the new document is found and the deleted one
    never (not even in a later answer); before, it answers from the version it had."""
    found, body = replica.doc_ids(NEW_QUERY)
    gone, body2 = replica.doc_ids(DELETED_QUERY)
    if body["index_version"] != version:
        return False
    assert body2["index_version"] == version, f"{replica.name} went back to {body2['index_version']}"
    assert "axolotl" in found, f"{replica.name} on {version} lacks the new document"
    assert DELETED not in gone, f"{replica.name} on {version} served the deleted document"
    return True


def wait_until(check: Any, timeout_s: float, what: str) -> float:
    """Poll ``check`` until true; the seconds it took."""
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < timeout_s, f"{what} not within {timeout_s} s"
        time.sleep(0.05)
    return time.monotonic() - started


def everyone_on(replicas: list[Replica], version: str) -> bool:
    listed = {r["replica"]: r for r in replicas[0].index()["replicas"]}
    return all(listed.get(r.name, {}).get("version") == version and listed[r.name]["live"] for r in replicas)


def breaker_state(replica: Replica) -> str:
    states = httpx.get(f"{replica.url}/admin/breakers", headers=ADMIN).json()
    return str({b["name"]: b["state"] for b in states}["qdrant"])


def bm25_only(replicas: list[Replica], opened: bool) -> None:
    """Open the vector store's breaker (openings are shared through Redis: answers come from BM25 alone
    on every replica), or close it on each replica."""
    state = "open" if opened else "closed"
    for replica in replicas[:1] if opened else replicas:
        r = httpx.post(f"{replica.url}/admin/breakers/qdrant", json={"state": state}, headers=ADMIN)
        assert r.status_code == 200, r.text
    for replica in replicas:
        wait_until(lambda rep=replica: breaker_state(rep) == state, 10, f"{replica.name} breaker {state}")


def assert_shards_hold(data_dir: Path, version: str, count: int) -> None:
    """After the replicas stopped: every shard slot is on ``version`` and holds each of its live points."""
    versions = VersionStore(data_dir / "versions" / COLLECTION)
    view = VersionView.load(versions, version)
    assert view is not None
    live = view.live_points()
    base = data_dir / "qdrant-edge" / COLLECTION
    slots = [base, *sorted(base.parent.glob(f"{COLLECTION}.replica-*[0-9]"))]
    held = 0
    for slot in slots:
        if not (slot / "shard").exists():
            continue
        record = SyncRecord.read(slot / "synced.json")
        assert record is not None and record.version == version, f"{slot.name}: {record}"
        store = EdgeStore(slot)
        try:
            assert live <= store.all_ids(), f"{slot.name} lacks points of {version}"
        finally:
            store.close()
        held += 1
    assert held >= count


def test_a_publish_through_one_replica_reaches_the_others_within_two_seconds(
    replicas: list[Replica], tmp_path: Path
) -> None:
    one, two, three = replicas
    before = one.index()["index_version"]
    assert all(r.index()["index_version"] == before for r in replicas)
    assert DELETED in two.doc_ids(DELETED_QUERY)[0]

    version, job_id = publish_job(one)
    published = time.monotonic()
    assert version != before
    for replica in (two, three):
        wait_until(lambda rep=replica: sees_new_version(rep, version), FOLLOW_WITHIN_S, replica.name)
    wait_until(lambda: everyone_on(replicas, version), FOLLOW_WITHIN_S, "all three listed on the new version")
    assert time.monotonic() - published <= FOLLOW_WITHIN_S + 0.5  # the polls themselves take time
    for replica in replicas:
        summary = replica.index()
        assert summary["index_version"] == summary["published_version"] == version
        assert summary["vector_store"]["holds_version"] == version
        assert summary["vector_store"]["per_process"] is True

    # BM25 alone (the vector store's breaker open on every replica): the same answer
    bm25_only(replicas, True)
    for replica in replicas:  # new query texts: computed now, not cached answers
        found, body = replica.doc_ids(f"mountain lakes salamanders {replica.name}")
        assert body["cache"] == "miss"
        assert ("retrieve.dense", "breaker_open") in {(d["step"], d["code"]) for d in body["degraded"]}
        assert "axolotl" in found
        gone, body = replica.doc_ids(f"honey pollinate insects {replica.name}")
        assert body["cache"] == "miss" and DELETED not in gone
    bm25_only(replicas, False)

    # the index lists the three, and the job says when every live replica served its version
    index = one.index()
    assert {r["replica"] for r in index["replicas"] if r["live"]} == {"r1", "r2", "r3"}
    rollout = httpx.get(f"{one.url}/jobs/{job_id}", headers=ADMIN).json()["rollout"]
    assert rollout["version"] == version and rollout["complete"] is True
    assert (rollout["live_replicas"], rollout["switched"], rollout["waiting"]) == (3, 3, [])
    assert rollout["completed_at"] >= max(r["switched_at"] for r in index["replicas"])

    # feedback reaches any replica: a query answered by replica 1, rated through replica 2 (once)
    _, answered = one.doc_ids("who pollinates flowers at night")
    assert answered["cache"] == "miss" and not answered["degraded"]
    rating = {"request_id": answered["request_id"], "rating": 4}
    assert httpx.post(f"{two.url}/feedback", json=rating, headers=ACME).status_code == 200
    assert httpx.post(f"{three.url}/feedback", json=rating, headers=ACME).status_code == 404  # taken

    for replica in replicas:
        replica.stop()
    assert_shards_hold(tmp_path / "data", version, 3)


def test_a_replica_killed_while_it_switches_comes_back_on_the_newest_version(
    replicas: list[Replica], tmp_path: Path
) -> None:
    one, _, three = replicas
    assert three.proc is not None
    three.proc.send_signal(signal.SIGSTOP)  # it misses the publish, then dies in the middle of following it
    try:
        version = publish_through(one)
        three.proc.send_signal(signal.SIGCONT)
        deadline = time.monotonic() + 10
        while "syncing vector shard to" not in three.log.read_text():
            assert time.monotonic() < deadline, "replica 3 never started its switch"
            time.sleep(0.005)
        three.proc.send_signal(signal.SIGKILL)
        three.proc.wait(timeout=10)
    finally:
        if three.proc.poll() is None:
            three.proc.send_signal(signal.SIGCONT)
    three.start()
    three.wait_ready()
    for replica in replicas:
        wait_until(lambda rep=replica: sees_new_version(rep, version), FOLLOW_WITHIN_S * 5, replica.name)
        assert replica.index()["index_version"] == version
    wait_until(lambda: everyone_on(replicas, version), 10, "all three listed on the new version")
    for replica in replicas:
        replica.stop()
    assert_shards_hold(tmp_path / "data", version, 3)


def test_a_redis_outage_during_a_publish_changes_nothing(
    replicas: list[Replica], redis_process: RedisServer, tmp_path: Path
) -> None:
    one, two, three = replicas
    redis_process.pause()  # every Redis call now times out: the breaker opens, the service goes on
    try:
        version = publish_through(one)
        for replica in (two, three):
            wait_until(lambda rep=replica: sees_new_version(rep, version), FOLLOW_WITHIN_S * 2, replica.name)
        wait_until(lambda: everyone_on(replicas, version), FOLLOW_WITHIN_S * 2, "all on the new version")
    finally:
        redis_process.resume()
    for replica in replicas:
        assert sees_new_version(replica, version)
        replica.stop()
    assert_shards_hold(tmp_path / "data", version, 3)
    # nothing the replicas need lives only in Redis: the versions on disk are whole
    view = VersionView.load(VersionStore(tmp_path / "data" / "versions" / COLLECTION))
    assert view is not None and view.name == version
    assert np.asarray(view.live_rows) == len(ACME_DOCS)  # 3 - bee + axolotl


def test_workers_on_the_embedded_engine_each_hold_a_shard_and_follow(tmp_path: Path) -> None:
    corpus = tmp_path / "acme.jsonl"
    corpus.write_text("".join(json.dumps({"_id": d["id"], **d}) + "\n" for d in ACME_DOCS))
    data_dir = tmp_path / "data"
    unshared = ("RAG_REDIS_URL", "RAG_REPLICA_ID")  # no Redis; each worker names itself host:pid
    env = {k: v for k, v in env_for(data_dir, "", "w").items() if k not in unshared}
    subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(corpus), "--tenant", "acme"], env=env, check=True
    )
    port = free_port()
    server = Replica("workers", f"http://127.0.0.1:{port}", env, tmp_path / "workers.log", port=port)
    server.proc = subprocess.Popen(
        [sys.executable, "-m", "rag", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=server.log.open("ab"),
    )
    try:
        server.wait_ready()

        def live_workers() -> list[dict[str, Any]]:
            # each worker loads on its own: the one that answers may still be loading (503)
            r = httpx.get(f"{server.url}/admin/index", headers=ADMIN, timeout=10)
            return [x for x in r.json()["replicas"] if x["live"]] if r.status_code == 200 else []

        wait_until(lambda: len(live_workers()) == 2, 60, "both workers serving")
        assert len({r["pid"] for r in live_workers()}) == 2
        version = publish_through(server)  # one worker ingests; the other follows
        wait_until(
            lambda: [r["version"] for r in live_workers()] == [version, version], FOLLOW_WITHIN_S, "workers"
        )
        for _ in range(20):  # whichever worker answers, it answers from the new version
            assert sees_new_version(server, version)
    finally:
        server.stop()
    assert_shards_hold(data_dir, version, 2)


def test_with_redis_a_publish_is_announced_and_followed_before_the_next_poll(
    tmp_path: Path, redis_process: RedisServer
) -> None:
    slow_poll = {"RAG_VERSION_POLL_MS": "20000", "RAG_REPLICA_LEASE_S": "60"}
    with three_replicas(tmp_path, redis_process.url, **slow_poll) as group:
        one, two, three = group
        # a replica is ready (and leased) before its subscription is up: publish once all three listen,
        # or the announcement can reach fewer (fresh-clone CI saw r2 miss it and wait for the poll)
        channel = RedisKeys(COLLECTION).index_published
        client = redis.Redis.from_url(redis_process.url)
        wait_until(
            lambda: dict(client.pubsub_numsub(channel)).get(channel.encode(), 0) >= 3, 30.0, "subscribed"
        )
        client.close()
        version = publish_through(one)
        for replica in (two, three):  # a poll would take up to 20 s (5 s: slack for a loaded machine)
            wait_until(lambda rep=replica: sees_new_version(rep, version), 5.0, replica.name)
