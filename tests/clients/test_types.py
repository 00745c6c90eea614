"""Typed answers read from JSON and written back unchanged, also when a newer server adds fields or an
older one leaves optional ones out; a body of the wrong shape is a protocol error."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from rag.clients import (
    FieldError,
    InvalidRequest,
    QueryResult,
    RagProtocolError,
    RagServerError,
    Readiness,
    ServiceUnavailable,
)
from rag.clients.errors import http_error

ANSWER: dict[str, Any] = {
    "request_id": "r1",
    "results": [
        {
            "doc_id": "d1",
            "chunk_id": "d1#0",
            "rank": 1,
            "score": 0.5,
            "title": "T",
            "text": "passage",
            "metadata": {"kind": "x", "tags": ["a", "b"]},
        }
    ],
    "route": "hybrid",
    "plan": {"retrievers": ["bm25", "dense"], "rerank_depth": 0},
    "degraded": [{"step": "rerank", "code": "not_configured", "reason": "no reranker"}],
    "cache": "miss",
    "timings_ms": {"plan": 0.1, "fuse": 0.2},
    "cost": {
        "embedded_texts": 1,
        "rerank_pairs": 0,
        "candidates": 20,
        "cpu_ms": 3.5,
        "money": None,
        "currency": None,
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "llm_money": 0.0,
    },
    "index_version": "v000003",
    "took_ms": 4.25,
    "answer": None,
}


def test_an_answer_reads_typed_and_writes_back_unchanged() -> None:
    result = QueryResult.from_json(ANSWER)
    assert result.to_json() == ANSWER
    assert result.doc_ids == ["d1"] and result.results[0].metadata["tags"] == ["a", "b"]
    assert result.degradation_codes == ["not_configured"] and result.cost is not None
    assert result.cost.cpu_ms == 3.5 and result.index_version == "v000003"


def test_fields_a_newer_server_adds_are_kept_not_refused() -> None:
    newer = copy.deepcopy(ANSWER)
    newer["trace_id"] = "abc"
    newer["abstained"] = {"reason": "below min_score"}
    newer["results"][0]["evidence"] = {"bm25": {"rank": 1, "score": 7.1}}
    newer["degraded"][0]["since"] = 3
    newer["cost"]["gpu_ms"] = 0.0
    result = QueryResult.from_json(newer)
    assert result.to_json() == newer
    assert result.extra["trace_id"] == "abc" and result.results[0].extra["evidence"]["bm25"]["rank"] == 1
    assert result.degraded[0].extra == {"since": 3}


def test_optional_fields_an_older_server_leaves_out_take_defaults() -> None:
    older = {"request_id": "r0", "results": [{"doc_id": "d", "text": "t"}]}
    result = QueryResult.from_json(older)
    assert result.to_json() == older  # writes back what was read, nothing more
    assert result.results[0].score == 0.0 and result.degraded == () and result.cost is None


@pytest.mark.parametrize(
    "body",
    [[], "text", {"request_id": "r", "results": {}}, {"results": []}, {"request_id": "r", "results": [1]}],
)
def test_a_body_of_the_wrong_shape_is_a_protocol_error(body: Any) -> None:
    with pytest.raises(RagProtocolError):
        QueryResult.from_json(body)


def test_readiness_reads_the_503_body_too() -> None:
    body = {
        "ready": False,
        "phase": "no_index",
        "reason": "no index published yet",
        "index_version": None,
        "embedder": "hash:64",
        "reranker": None,
        "reranker_refused": None,
    }
    ready = Readiness.from_json(body)
    assert not ready.ready and ready.phase == "no_index" and ready.to_json() == body


def test_the_service_error_body_becomes_a_typed_error_with_its_fields() -> None:
    body = {
        "error": {
            "code": "invalid_request",
            "message": "invalid request: body.top_k: Input should be less than or equal to 100",
            "fields": [
                {"field": "body.top_k", "message": "Input should be less than or equal to 100", "limit": 100}
            ],
        },
        "request_id": "abc",
    }
    error = http_error(422, body, request_id=None, retry_after_s=None, attempts=1)
    assert isinstance(error, InvalidRequest) and error.code == "invalid_request"
    assert error.fields == (FieldError("body.top_k", "Input should be less than or equal to 100", 100),)
    assert error.request_id == "abc" and "body.top_k" in str(error) and "(limit 100)" in str(error)
    # another hop's answer (a proxy's HTML) still raises the status's type, with the text as its message
    proxy = http_error(502, "<html>Bad gateway</html>", request_id="x", retry_after_s=None, attempts=3)
    assert type(proxy) is RagServerError and proxy.code == "http_502" and proxy.attempts == 3
    assert isinstance(http_error(503, {}, request_id=None, retry_after_s=5, attempts=1), ServiceUnavailable)
