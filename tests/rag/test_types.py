"""The pipeline's vocabulary: each name is built from its parts and renders to the wire value clients,
dashboards and alerts already use (``degraded[].step``, ``timings_ms`` keys, metric labels)."""

from __future__ import annotations

import pytest

from rag.types import (
    CacheLevel,
    Degradation,
    DegradationCode,
    Dependency,
    ListKey,
    Retriever,
    Step,
    StepKey,
)


def test_step_keys_render_their_wire_names() -> None:
    assert str(StepKey(Step.RETRIEVE_BM25)) == "retrieve.bm25"
    assert str(StepKey(Step.RETRIEVE_BM25, 2)) == "retrieve.bm25.q2"
    assert str(StepKey(Step.EMBED, 1)) == "embed.q1"
    assert str(StepKey(Step.RERANK_GATE)) == "rerank.gate"
    assert Step.RETRIEVE_DENSE.cost_key(64) == "retrieve.dense@64"
    assert Step.RETRIEVE_DENSE.cost_key(None) == "retrieve.dense@full"


def test_list_keys_render_their_names_and_know_their_step() -> None:
    assert [str(k) for k in (ListKey(Retriever.BM25), ListKey(Retriever.DENSE, 2))] == ["bm25", "dense.q2"]
    prf = ListKey(Retriever.BM25, prf=True)
    assert str(prf) == "bm25.prf" and prf.step == StepKey(Step.RETRIEVE_BM25_PRF)
    assert ListKey(Retriever.DENSE, 1).step == StepKey(Step.RETRIEVE_DENSE, 1)
    with pytest.raises(ValueError, match="PRF"):
        ListKey(Retriever.DENSE, prf=True)


@pytest.mark.parametrize(
    ("step", "component"),
    [
        (StepKey(Step.EMBED, 1), "embedder"),
        (StepKey(Step.RETRIEVE_DENSE, 2), "qdrant"),
        (StepKey(Step.RERANK), "reranker"),
        (StepKey(Step.CACHE), "redis"),
        (StepKey(Step.SYNTHESIZE), "llm"),
        (StepKey(Step.RETRIEVE_BM25, 1), "retrieve.bm25"),  # in process: the step names itself
        (StepKey(Step.RETRIEVE_BM25_PRF), "retrieve.bm25.prf"),
    ],
)
def test_the_errors_component_of_a_step(step: StepKey, component: str) -> None:
    assert step.component == component


def test_every_dependency_has_a_step() -> None:
    assert {s.dependency for s in Step} - {None} == set(Dependency)


def test_failures_are_the_dependency_failures() -> None:
    failures = {c.value for c in DegradationCode if c.is_failure}
    assert failures == {"error", "timeout", "breaker_open", "redis_unavailable"}
    assert {c.value for c in DegradationCode if c.timed_out} == {"timeout", "deadline"}


def test_degradation_wire_form() -> None:
    d = Degradation(StepKey(Step.EMBED, 2), DegradationCode.TIMEOUT, "timed out")
    assert d.as_dict() == {"step": "embed.q2", "code": "timeout", "reason": "timed out"}
    assert [c.value for c in CacheLevel] == ["l1", "l2", "coalesced", "miss", "off"]
