"""The feedback log: a ring of segments per tenant, bounded by size; one writer per segment; the reader
sees one tenant only and skips what does not parse."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from rag.io.feedback_log import FeedbackEvent, FeedbackLog, prune, read_events, tenant_folder


def event(tenant: str = "acme", i: int = 0, query: str = "who hunts mice") -> FeedbackEvent:
    return FeedbackEvent(
        tenant=tenant,
        request_id=f"r{i}",
        query=query,
        shown=("owl", "cat", "bee"),
        clicked=("cat",),
        arm="hybrid",
        ts=1000.0 + i,
        replica="host:1",
    )


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.jsonl"))


def test_an_event_round_trips_through_its_line() -> None:
    e = FeedbackEvent(
        tenant="acme",
        request_id="r",
        query="q ü",
        shown=("a",),
        rating=4.0,
        relevance={"a": 2.0},
        extra={"later_field": 1},
    )
    assert FeedbackEvent.from_json(e.to_json()) == e
    with pytest.raises(ValueError, match="not a feedback event"):
        FeedbackEvent.from_json('{"tenant": "acme"}')


def test_each_tenant_has_its_own_folder_and_the_reader_sees_one_tenant(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, max_bytes=1 << 20, replica="host:1")
    for i in range(3):
        assert log.append(event("acme", i))
        assert log.append(event("globex", i, query="secret plan"))
    assert {p.name for p in tmp_path.iterdir()} == {"acme", "globex"}
    acme = list(read_events(tmp_path, "acme"))
    assert [e.request_id for e in acme] == ["r0", "r1", "r2"]
    assert all(e.query == "who hunts mice" for e in acme)
    # a globex line copied into acme's folder is still not acme's
    stray = tenant_folder(tmp_path, "acme") / "0-stray.jsonl"
    stray.write_text(event("globex", 9, query="secret plan").to_json() + "\n{torn")
    assert [e.request_id for e in read_events(tmp_path, "acme")] == ["r0", "r1", "r2"]
    assert list(read_events(tmp_path, "initech")) == []
    with pytest.raises(ValueError, match="tenant must match"):
        list(read_events(tmp_path, "../globex"))


def test_a_tenants_log_is_a_ring_bounded_by_size(tmp_path: Path) -> None:
    cap = 64 * 1024
    log = FeedbackLog(tmp_path, max_bytes=cap, replica="host:1")
    line = len(event().to_json()) + 1
    n = 20 * cap // line  # twenty times what the cap holds
    for i in range(n):
        log.append(event("acme", i))
    folder = tenant_folder(tmp_path, "acme")
    assert folder_bytes(folder) <= cap + log.segment_bytes  # the cap plus the segment being written
    kept = [int(e.request_id[1:]) for e in read_events(tmp_path, "acme")]
    assert kept == list(range(kept[0], n))  # the newest, in order: the oldest went first
    assert len(kept) * line >= cap - log.segment_bytes
    log.append(event("globex", 0))  # another tenant's volume never evicts acme's
    assert [int(e.request_id[1:]) for e in read_events(tmp_path, "acme")] == kept


def test_two_processes_write_their_own_segments_and_share_the_bound(tmp_path: Path) -> None:
    cap = 32 * 1024
    one = FeedbackLog(tmp_path, max_bytes=cap, replica="host:1")
    two = FeedbackLog(tmp_path, max_bytes=cap, replica="host:2")
    for i in range(2000):
        (one if i % 2 else two).append(event("acme", i))
    folder = tenant_folder(tmp_path, "acme")
    names = [p.name for p in folder.glob("*.jsonl")]
    assert any(n.endswith("-host_1.jsonl") for n in names) and any(n.endswith("-host_2.jsonl") for n in names)
    assert folder_bytes(folder) <= cap + 2 * one.segment_bytes
    ids = {int(e.request_id[1:]) for e in read_events(tmp_path, "acme")}
    assert max(ids) == 1999 and 1998 in ids  # both writers' newest lines are there


def test_a_segment_pruned_under_its_writer_is_recreated(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path, max_bytes=1 << 20, replica="host:1")
    log.append(event("acme", 0))
    for path in tenant_folder(tmp_path, "acme").glob("*.jsonl"):
        path.unlink()  # another process's pruning
    assert log.append(event("acme", 1))
    assert [e.request_id for e in read_events(tmp_path, "acme")] == ["r1"]


def test_prune_deletes_the_least_recently_written_and_keeps_the_given_segment(tmp_path: Path) -> None:
    now = time.time()
    for i, name in enumerate(["a.jsonl", "b.jsonl", "c.jsonl"]):
        (tmp_path / name).write_bytes(b"x" * 100)
        os.utime(tmp_path / name, (now - 100 + i, now - 100 + i))  # a oldest, c newest
    assert prune(tmp_path, 150, keep=tmp_path / "a.jsonl") == [tmp_path / "b.jsonl", tmp_path / "c.jsonl"]
    assert [p.name for p in tmp_path.iterdir()] == ["a.jsonl"]


def test_a_failing_write_is_reported_not_raised(tmp_path: Path) -> None:
    blocker = tmp_path / "log"
    blocker.write_text("a file where the folder should be")
    assert FeedbackLog(blocker, max_bytes=1024, replica="r").append(event()) is False
