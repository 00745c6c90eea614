"""Pending decisions: bounded, expiring, taken once; the JSON-lines propensity log; the IPS estimate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.bandit.decisions import DecisionLog, ips_estimate


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def record(log: DecisionLog, request_id: str, arm: str = "hybrid") -> None:
    log.record(request_id, "acme", arm, [0.5, 1.0], 0.9, ["d1", "d2"])


def test_take_finds_a_decision_once() -> None:
    log = DecisionLog()
    record(log, "r1")
    decision = log.take("r1", "acme")
    assert decision is not None
    assert (decision.arm, decision.tenant, decision.features) == ("hybrid", "acme", (0.5, 1.0))
    assert decision.served_doc_ids == ("d1", "d2") and decision.propensity == 0.9
    assert log.take("r1", "acme") is None  # one feedback per decision
    assert log.take("never", "acme") is None


def test_another_tenant_cannot_take_a_decision() -> None:
    log = DecisionLog()
    record(log, "r1")
    assert log.take("r1", tenant="globex") is None
    assert log.take("r1", tenant="acme") is not None


def test_decisions_are_keyed_by_tenant_and_request_id() -> None:
    """The request id may be the client's: globex reusing acme's id neither replaces nor takes acme's."""
    log = DecisionLog()
    log.record("same-id", "acme", "hybrid", [1.0], 1.0, ["a1"])
    log.record("same-id", "globex", "bm25", [1.0], 1.0, ["g1"])
    assert len(log) == 2
    globex = log.take("same-id", "globex")
    acme = log.take("same-id", "acme")
    assert globex is not None and globex.served_doc_ids == ("g1",)
    assert acme is not None and acme.served_doc_ids == ("a1",)


def test_the_oldest_decisions_are_dropped_past_the_bound() -> None:
    log = DecisionLog(max_entries=3)
    for i in range(5):
        record(log, f"r{i}")
    assert len(log) == 3
    assert log.take("r0", "acme") is None and log.take("r1", "acme") is None
    assert all(log.take(f"r{i}", "acme") is not None for i in (2, 3, 4))
    record(log, "a")
    record(log, "b")
    record(log, "a", arm="bm25")  # recorded again: replaces, and counts as the newest
    record(log, "c")
    record(log, "d")
    assert log.take("b", "acme") is None
    taken = log.take("a", "acme")
    assert taken is not None and taken.arm == "bm25"


def test_decisions_expire_after_the_ttl() -> None:
    clock = FakeClock()
    log = DecisionLog(ttl_s=3600, clock=clock)
    record(log, "old")
    clock.now += 1800
    record(log, "young")
    clock.now += 1801  # "old" is 3601 s old, "young" 1801 s
    assert log.take("old", "acme") is None
    assert log.take("young", "acme") is not None
    record(log, "r")
    clock.now += 3601
    record(log, "s")  # recording drops the expired ones from memory
    assert len(log) == 1


def test_decisions_and_rewards_go_to_the_jsonl_log(tmp_path: Path) -> None:
    clock = FakeClock()
    path = tmp_path / "logs" / "bandit.jsonl"
    log = DecisionLog(log_path=path, clock=clock)
    log.record(
        "r1", "acme", "hybrid-rerank", [0.1, 1.0], 0.05, ["d3", "d1"], allowed=["bm25", "hybrid-rerank"]
    )
    clock.now += 2.5
    decision = log.take("r1", "acme")
    assert decision is not None
    log.log_reward(decision, 0.42, quality=0.5, cost=1.6, signal="clicked")
    log.close()
    first, second = (json.loads(line) for line in path.read_text().splitlines())
    assert first == {
        "type": "decision",
        "ts": 1000.0,
        "request_id": "r1",
        "tenant": "acme",
        "arm": "hybrid-rerank",
        "propensity": 0.05,
        "features": [0.1, 1.0],
        "served": ["d3", "d1"],
        "allowed": ["bm25", "hybrid-rerank"],
    }
    assert second == {
        "type": "reward",
        "ts": 1002.5,
        "request_id": "r1",
        "tenant": "acme",
        "arm": "hybrid-rerank",
        "propensity": 0.05,
        "reward": 0.42,
        "quality": 0.5,
        "cost": 1.6,
        "signal": "clicked",
    }


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="max_entries must be >= 1, got 0"):
        DecisionLog(max_entries=0)
    with pytest.raises(ValueError, match="ttl_s must be"):
        DecisionLog(ttl_s=0)
    with pytest.raises(ValueError, match=r"propensity must be in \(0, 1\], got 0"):
        DecisionLog().record("r", "t", "a", [1.0], 0.0, [])


def test_ips_estimate_of_a_target_policy() -> None:
    # logged uniformly over two arms; the target always picks arm A, which earned 1 (B earned 0)
    rewards = [1.0, 0.0, 1.0, 0.0]
    logged = [0.5, 0.5, 0.5, 0.5]
    target = [1.0, 0.0, 1.0, 0.0]  # π(logged arm | x): 1 where A was logged
    ips, snips = ips_estimate(rewards, logged, target)
    assert ips == pytest.approx(1.0) and snips == pytest.approx(1.0)
    assert ips_estimate([0.5], [0.25], [0.0]) == (0.0, 0.0)
    with pytest.raises(ValueError, match="as many"):
        ips_estimate([1.0], [0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="logged propensities must be in"):
        ips_estimate([1.0], [0.0], [1.0])
