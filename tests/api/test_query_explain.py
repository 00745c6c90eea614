"""Explainable results through the real ASGI app: per-result evidence (the same when served from the
cache), ``min_score`` abstention on a calibrated collection, ``group_by`` and ``diversity``, and the 422s
that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from rag.bm25.index import BM25Params
from rag.fusion import FusionChoice
from rag.index.calibration import FEATURES, LEG_SETS, ScoreCalibration
from rag.index.tuning import CollectionTuning
from tests.api.conftest import ACME, ACME_DOCS, ingest, serve, service_settings
from tests.conftest import make_ingestor

pytestmark = pytest.mark.anyio

LONG_DOC = {
    "id": "mice-book",
    "title": "Mice",
    "text": " ".join(
        f"Chapter {i}: mice live in barns and fields, and owls and cats hunt them." for i in range(80)
    ),
}


async def ask(client: httpx.AsyncClient, **body: Any) -> httpx.Response:
    return await client.post(
        "/query", json={"query": "who hunts mice at night", "top_k": 4, **body}, headers=ACME
    )


async def test_each_result_carries_its_evidence_and_a_cached_answer_the_same(
    client: httpx.AsyncClient,
) -> None:
    first = (await ask(client)).json()
    assert first["cache"] == "miss" and first["route"] == "hybrid" and first["abstained"] is None
    for r in first["results"]:
        e = r["evidence"]
        assert set(e) == {"bm25", "dense", "fused", "rerank", "confidence"}
        assert e["fused"] == r["score"] and e["rerank"] is None and e["confidence"] is None
        assert e["bm25"] is not None or e["dense"] is not None
        for leg in ("bm25", "dense"):
            if e[leg] is not None:
                assert set(e[leg]) == {"rank", "score"} and e[leg]["rank"] >= 1
    again = (await ask(client)).json()
    assert again["cache"] == "l1" and again["results"] == first["results"]


async def test_bad_shaping_fields_are_422s_naming_the_field(client: httpx.AsyncClient) -> None:
    cases = [
        ({"min_score": 1.5}, "body.min_score", 1.0),
        ({"min_score": -0.1}, "body.min_score", 0.0),
        ({"min_score": "high"}, "body.min_score", None),
        ({"diversity": 2}, "body.diversity", 1.0),
        ({"diversity": -1}, "body.diversity", 0.0),
        ({"group_by": "chunk"}, "body.group_by", None),
    ]
    for body, field, limit in cases:
        r = await ask(client, **body)
        assert r.status_code == 422, (body, r.text)
        fields = r.json()["error"]["fields"]
        assert fields[0]["field"] == field, (body, fields)
        if limit is not None:
            assert fields[0]["limit"] == limit
    # a collection never tuned has no confidence scale: min_score is refused, not compared with nothing
    r = await ask(client, min_score=0.5)
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["fields"][0]["field"] == "body.min_score" and "rag tune" in error["message"]


async def test_group_by_doc_counts_chunks_and_diversity_is_keyed_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch, chunk_words=60, chunk_overlap_words=10))
    async with serve(app) as client:
        await ingest(client, "acme", [*ACME_DOCS, LONG_DOC])
        plain = (await ask(client)).json()
        grouped = (await ask(client, group_by="doc")).json()
        assert grouped["cache"] == "miss"  # its own cache entry: its results carry what plain ones do not
        key = [(r["doc_id"], r["chunk_id"], r["score"]) for r in plain["results"]]
        assert [(r["doc_id"], r["chunk_id"], r["score"]) for r in grouped["results"]] == key
        chunks = {r["doc_id"]: r["chunks"] for r in grouped["results"]}
        assert chunks["mice-book"] > 1 and all(n == 1 for d, n in chunks.items() if d != "mice-book")
        assert all(r["chunks"] is None for r in plain["results"])
        assert (await ask(client, group_by="doc")).json()["results"] == grouped["results"]
        # diversity 0 is today's request (the same cache entry); > 0 is another one, over the same documents
        assert (await ask(client, diversity=0)).json()["cache"] == "l1"
        diverse = (await ask(client, diversity=0.7)).json()
        assert diverse["cache"] == "miss" and diverse["results"][0]["doc_id"] == plain["results"][0]["doc_id"]
        assert len({r["doc_id"] for r in diverse["results"]}) == len(diverse["results"])


def _calibration() -> ScoreCalibration:
    """A scale that reads the dense cosine (and not much else): confidences spread over (0, 1)."""
    w = [0.0] * len(FEATURES)
    w[FEATURES.index("intercept")] = -1.0
    w[FEATURES.index("dense.cosine")] = 4.0
    w[FEATURES.index("bm25.present")] = 0.5
    return ScoreCalibration({legs: tuple(w) for legs in LEG_SETS}, "a test", {})


async def test_min_score_on_a_calibrated_collection(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = service_settings(tmp_path, monkeypatch)
    async with serve(create_app(settings)) as client:
        await ingest(client, "acme", ACME_DOCS)
    ingestor, store = make_ingestor(settings)  # as `rag tune` publishes it
    ingestor.retune(
        CollectionTuning(BM25Params(), FusionChoice(), "a test", "", {}, _calibration()).to_json()
    )
    store.close()
    async with serve(create_app(settings)) as client:
        base = (await ask(client)).json()
        confidences = [r["evidence"]["confidence"] for r in base["results"]]
        assert confidences and all(c is not None and 0.0 < c < 1.0 for c in confidences)
        assert len(set(confidences)) > 1
        # below every confidence: the same results
        below = (await ask(client, min_score=min(confidences) - 1e-6)).json()
        assert below["results"] == base["results"] and below["abstained"] is None
        # above every confidence: no results, and why
        top = max(confidences)
        above = (await ask(client, min_score=min(1.0, top + 1e-3))).json()
        assert above["results"] == []
        assert above["abstained"]["best"] == pytest.approx(top) and above["abstained"]["min_score"] > top
        assert "min_score" in above["abstained"]["reason"]
        # in between: the confident ones, in their order (ranks keep their place)
        mid = sorted(confidences)[len(confidences) // 2]
        kept = (await ask(client, min_score=mid)).json()["results"]
        assert [r["doc_id"] for r in kept] == [
            r["doc_id"] for r in base["results"] if r["evidence"]["confidence"] >= mid
        ]
        # a cached answer is floored the same way (min_score is applied after the cache)
        again = (await ask(client, min_score=min(1.0, top + 1e-3))).json()
        assert again["cache"] == "l1" and again["results"] == [] and again["abstained"] == above["abstained"]
