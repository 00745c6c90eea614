"""The typed client against a live ``rag serve``: its answer is the JSON ``/query`` sent; a real 429 (the
service's rate limiter) and a real 503 (nothing published yet) are retried after their ``Retry-After``,
counted by attempts; a wait past the deadline is not started; 4xx raise the typed error naming the field;
connection failures are retried only when that is safe."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from rag.clients import (
    NO_RETRY,
    PRINCIPAL_HEADER,
    AsyncRagClient,
    Forbidden,
    InvalidRequest,
    NotFound,
    RagClient,
    RagTimeout,
    RagTransportError,
    RateLimited,
    RetryEvent,
    RetryPolicy,
    ServiceUnavailable,
    Timeouts,
    Unauthorized,
)
from rag.testing.servers import free_port
from tests.clients.conftest import ADMIN_TOKEN, BETA_KEY, KEY, LiveService, demo_queries

pytestmark = pytest.mark.integration


class Recorder:
    """An ``httpx.Client`` whose hooks keep every request sent and every answer's JSON."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[Any] = []

    def on_request(self, request: httpx.Request) -> None:
        self.requests.append(request)

    def on_response(self, response: httpx.Response) -> None:
        response.read()
        self.answers.append(response.json())

    def client(self) -> httpx.Client:
        return httpx.Client(event_hooks={"request": [self.on_request], "response": [self.on_response]})


def test_the_typed_answer_is_the_json_query_sent(demo_service: LiveService) -> None:
    recorder = Recorder()
    with RagClient(demo_service.url, KEY, http=recorder.client()) as client:
        for text in demo_queries()[:5]:
            result = client.query(text, top_k=7)
            assert result.to_json() == recorder.answers[-1]
            assert len(result.results) == 7 and [r.rank for r in result.results] == list(range(1, 8))
            assert result.index_version and result.request_id
        # the same answer as a plain POST /query with the same body (an L1 repeat: the same results)
        raw = httpx.post(
            f"{demo_service.url}/query",
            json={"query": demo_queries()[0], "top_k": 7},
            headers={"Authorization": f"Bearer {KEY}"},
        ).json()
        again = client.query(demo_queries()[0], top_k=7)
        assert [r.to_json() for r in again.results] == raw["results"]
        assert again.index_version == raw["index_version"]
        assert client.health() and client.ready().ready
        assert client.ready().index_version == again.index_version


def test_request_fields_and_headers_reach_the_service(demo_service: LiveService) -> None:
    recorder = Recorder()
    with RagClient(demo_service.url, KEY, principal="user:alice;groups=eng", http=recorder.client()) as c:
        result = c.query(
            "parse JSON", top_k=3, profile="latency", session_id="s-1", request_id="client-req-0001"
        )
        sent = recorder.requests[-1]
        assert sent.headers["authorization"] == f"Bearer {KEY}"
        assert sent.headers[PRINCIPAL_HEADER] == "user:alice;groups=eng"
        assert result.request_id == "client-req-0001"  # the service takes a well-formed X-Request-ID
        c.query("parse JSON", principal="user:bob")
        assert recorder.requests[-1].headers[PRINCIPAL_HEADER] == "user:bob"
        # a field the service does not know is refused by it, named (fields= passes newer fields through)
        with pytest.raises(InvalidRequest) as refused:
            c.query("parse JSON", fields={"min_scor": 0.5})
        assert "body.min_scor" in refused.value.field_names


def test_feedback_on_an_answer_and_a_typed_404_for_an_unknown_one(demo_service: LiveService) -> None:
    with RagClient(demo_service.url, KEY) as client:
        answer = client.query("a query only this test asks: how to sort a dict by value", top_k=3)
        assert answer.cache == "miss"
        applied = client.feedback(answer.request_id, clicked=[answer.results[0].doc_id])
        assert applied.request_id == answer.request_id and applied.arm
        with pytest.raises(NotFound) as unknown:
            client.feedback("no-such-request", rating=3)
        assert unknown.value.code == "unknown_request" and unknown.value.attempts == 1


def test_4xx_raise_the_typed_error_naming_the_field_and_limit_without_retrying(
    demo_service: LiveService,
) -> None:
    recorder = Recorder()
    with RagClient(demo_service.url, KEY, http=recorder.client()) as client:
        with pytest.raises(InvalidRequest) as too_many:
            client.query("parse JSON", top_k=1000)
        error = too_many.value
        assert error.status == 422 and error.code == "invalid_request" and error.attempts == 1
        (field,) = error.fields
        assert (field.field, field.limit) == ("body.top_k", 100)
        with pytest.raises(InvalidRequest) as long_query:
            client.query("x" * 3000)
        assert [(f.field, f.limit) for f in long_query.value.fields] == [("body.query", 2048)]
        assert len(recorder.requests) == 2  # no retry of a 4xx
    with RagClient(demo_service.url, "not-a-key") as stranger, pytest.raises(Unauthorized):
        stranger.query("parse JSON")
    with RagClient(demo_service.url, ADMIN_TOKEN) as admin, pytest.raises(Forbidden) as forbidden:
        admin.query("parse JSON")
    assert forbidden.value.code == "forbidden"


def test_a_real_429_is_retried_after_retry_after(limited_service: LiveService) -> None:
    events: list[RetryEvent] = []
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # really waits: the token bucket refills in real time
        slept.append(seconds)
        threading.Event().wait(seconds)

    recorder = Recorder()
    with RagClient(
        limited_service.url, KEY, on_retry=events.append, sleep=sleep, http=recorder.client()
    ) as client:
        client.query("parse JSON")  # takes the one token of the burst
        result = client.query("run a shell command")  # 429, Retry-After: 1, then answered
    assert len(result.results) > 0
    assert [r.url.path for r in recorder.requests] == ["/query"] * 3
    assert [(e.status, e.retry_after_s, e.attempt) for e in events] == [(429, 1.0, 1)]
    assert slept == [events[0].wait_s] and slept[0] >= 1.0  # never before Retry-After


def test_a_429_is_raised_at_once_when_retry_after_would_pass_the_deadline_or_no_attempt_is_left(
    limited_service: LiveService,
) -> None:
    slept: list[float] = []
    with RagClient(limited_service.url, BETA_KEY, sleep=slept.append) as client:
        client.query("parse JSON")  # the one token of beta's burst
        with pytest.raises(RateLimited) as late:
            client.query("run a shell command", timeout_s=0.5)
        assert late.value.retry_after_s == 1.0 and late.value.attempts == 1
    with RagClient(limited_service.url, BETA_KEY, retry=NO_RETRY, sleep=slept.append) as client:
        with pytest.raises(RateLimited) as once:
            client.query("compute a median")
        assert once.value.code == "rate_limited" and once.value.attempts == 1
    assert slept == []


def test_a_real_503_not_ready_is_raised_within_a_short_deadline_and_retried_within_a_long_one(
    empty_service: LiveService,
) -> None:
    """First a deadline shorter than the ``Retry-After: 5`` of a 503 ``not_ready``: raised at once. Then a
    long one: the wait between the attempts is where the index gets published (the test's ``sleep``), and
    the second attempt is answered."""
    slept: list[float] = []
    with (
        RagClient(empty_service.url, KEY, sleep=slept.append) as client,
        pytest.raises(ServiceUnavailable) as unavailable,
    ):
        client.query("what hunts mice?", timeout_s=2)
    assert unavailable.value.code == "not_ready" and unavailable.value.retry_after_s == 5.0
    assert unavailable.value.attempts == 1 and slept == []

    waits: list[float] = []

    def publish_instead_of_sleeping(seconds: float) -> None:
        waits.append(seconds)
        empty_service.ingest([{"id": "owl", "title": "Owl", "text": "Owls hunt mice at night."}])

    events: list[RetryEvent] = []
    with RagClient(
        empty_service.url, KEY, sleep=publish_instead_of_sleeping, on_retry=events.append
    ) as client:
        ready = client.ready()
        assert not ready.ready and ready.phase == "no_index" and ready.reason
        result = client.query("what hunts mice?", timeout_s=30)
    assert result.doc_ids == ["owl"]
    assert [(e.status, e.retry_after_s, e.attempt) for e in events] == [(503, 5.0, 1)]
    assert len(waits) == 1 and waits[0] >= 5.0


def test_a_refused_connection_is_retried_up_to_max_attempts() -> None:
    port = free_port()  # nothing listens there
    slept: list[float] = []
    policy = RetryPolicy(max_attempts=3, backoff_s=0.01)
    with RagClient(f"http://127.0.0.1:{port}", KEY, retry=policy, sleep=slept.append) as client:
        with pytest.raises(RagTransportError) as failed:
            client.query("anything")
        assert failed.value.attempts == 3 and len(slept) == 2 and "attempts exhausted" in str(failed.value)
        # nothing was sent, so feedback (not idempotent) is retried too
        with pytest.raises(RagTransportError) as feedback:
            client.feedback("r", rating=1)
        assert feedback.value.attempts == 3


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A socket that accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def test_an_answer_that_never_comes_is_a_timeout_not_retried(silent_server: str) -> None:
    slept: list[float] = []
    with (
        RagClient(silent_server, KEY, timeouts=Timeouts(read_s=0.2), sleep=slept.append) as client,
        pytest.raises(RagTimeout) as timed_out,
    ):
        client.query("anything")
    assert timed_out.value.attempts == 1 and slept == []


def test_the_async_client_keeps_the_deadline_and_answers_like_the_sync_one(
    demo_service: LiveService, silent_server: str
) -> None:
    async def run() -> None:
        async with AsyncRagClient(demo_service.url, KEY) as client:
            answers = await asyncio.gather(*(client.query(q, top_k=5) for q in demo_queries()[:6]))
            assert await client.health() and (await client.ready()).ready
        with RagClient(demo_service.url, KEY) as sync:
            for text, answer in zip(demo_queries()[:6], answers, strict=True):
                assert sync.query(text, top_k=5).results == answer.results
        async with AsyncRagClient(silent_server, KEY, timeouts=Timeouts(read_s=30)) as slow:
            with pytest.raises(RagTimeout) as timed_out:
                await slow.query("anything", timeout_s=0.3)
            assert timed_out.value.attempts == 1

    asyncio.run(run())


def test_the_principal_reaches_the_acl_inside_retrieval(demo_service: LiveService) -> None:
    """A document only alice may see: the client's principal (client-wide or per call) decides whether a
    query finds it; a malformed principal is the typed 422 naming the header."""
    demo_service.ingest(
        [{"id": "alice-only", "text": "Zebra quantum ledger reconciliation memo.", "acl": ["user:alice"]}]
    )
    text = "zebra quantum ledger reconciliation memo"
    with RagClient(demo_service.url, KEY, principal="user:alice;groups=eng") as alice:
        assert "alice-only" in alice.query(text).doc_ids
        assert "alice-only" not in alice.query(text, principal="user:bob;groups=eng").doc_ids
        with pytest.raises(InvalidRequest) as malformed:
            alice.query(text, principal="alice")
        assert malformed.value.field_names == ["header.X-RAG-Principal"]
    with RagClient(demo_service.url, KEY) as anonymous:
        assert "alice-only" not in anonymous.query(text).doc_ids
