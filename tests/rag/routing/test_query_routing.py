"""The service's routing state: features memoised per index version, bounded."""

from __future__ import annotations

import pytest

from rag.config import Settings
from rag.retrieval.plan import Profile
from rag.service import routing as routing_module
from rag.service.routing import QueryRouting


def test_features_are_memoised_per_version_and_bounded(settings: Settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    r = QueryRouting(settings, reranker_available=False)
    calls: list[str] = []
    analyze = r.analyzer.analyze

    def counting(text: str, idf):  # type: ignore[no-untyped-def]
        calls.append(text)
        return analyze(text, idf)

    monkeypatch.setattr(r.analyzer, "analyze", counting)
    monkeypatch.setattr(routing_module, "FEATURE_MEMO_ENTRIES", 2)

    def decide(text: str, version: str = "v1"):  # type: ignore[no-untyped-def]
        return r.decide("acme", text, idf=lambda t: 3.0, profile=Profile.BALANCED, top_k=10, version=version)

    first = decide("who hunts mice")
    assert decide("who hunts mice").features == first.features and calls == ["who hunts mice"]
    decide("who hunts mice", version="v2")  # a new vocabulary: analysed again
    assert calls == ["who hunts mice", "who hunts mice"]
    decide("a")
    decide("b")  # the memo keeps 2 entries: the oldest went
    decide("who hunts mice")
    assert calls[-1] == "who hunts mice" and len(calls) == 5


@pytest.mark.anyio
async def test_feedback_without_a_signal_is_refused_and_the_decision_stays(settings: Settings) -> None:
    r = QueryRouting(settings, reranker_available=False)
    r.decisions.record("req-1", "acme", "hybrid", [1.0] * 10, 1.0, ["d1"])
    with pytest.raises(ValueError, match="feedback must carry"):
        await r.feedback("acme", "req-1")
    assert (await r.feedback("acme", "req-1", rating=5)) is not None
