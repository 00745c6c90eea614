"""The typed clients of the service's HTTP API: :class:`RagClient` (sync) and :class:`AsyncRagClient`.

One call is a loop of attempts (:class:`_Attempts`, shared by both: it knows the deadline, the attempt
count and the retry policy; the clients only send and sleep). Each attempt's connect/read timeouts are cut
to the time left before the call's deadline (``Timeouts.total_s``, or ``timeout_s`` per call), so a call
returns or raises by its deadline: a wait for ``Retry-After`` that would pass it is not started.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from rag.clients.errors import RagProtocolError, RagTimeout, RagTransportError, http_error
from rag.clients.retry import RETRY_STATUSES, RetryPolicy, decide, parse_retry_after
from rag.clients.types import FeedbackResult, QueryResult, Readiness

log = logging.getLogger(__name__)

PRINCIPAL_HEADER = "X-RAG-Principal"
"""The caller's principal inside the tenant (``user:alice;groups=eng,ops``), forwarded as given: the
service applies document ACLs with it where it has them."""


def _version() -> str:
    try:
        return metadata.version("rag-retrieval-service")
    except metadata.PackageNotFoundError:  # run from a source tree
        return "0"


USER_AGENT = f"rag-client/{_version()} httpx/{httpx.__version__}"

# the request fields /query names today (api/schemas.py QueryBody); ``fields=`` adds newer ones
QUERY_FIELDS = frozenset({"query", "top_k", "filters", "profile", "answer", "session_id"})

FilterValue = str | int | bool | Sequence[str | int | bool]


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``connect_s``: to open a connection; ``read_s``: between bytes of the answer; ``total_s``: the
    deadline of a whole call, its attempts and the waits between them (a call's ``timeout_s`` replaces
    it)."""

    connect_s: float = 3.0
    read_s: float = 30.0
    total_s: float = 60.0

    def __post_init__(self) -> None:
        for name in ("connect_s", "read_s", "total_s"):
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be > 0 seconds, got {value!r}")


@dataclass(frozen=True, slots=True)
class RetryEvent:
    """Told to ``on_retry`` before each wait: attempt ``attempt`` failed with ``status`` (None: no answer)
    and the next one starts after ``wait_s``."""

    method: str
    path: str
    attempt: int
    status: int | None
    retry_after_s: float | None
    wait_s: float
    reason: str


@dataclass(frozen=True, slots=True)
class _Call:
    method: str
    path: str
    body: Mapping[str, Any] | None
    headers: Mapping[str, str]
    idempotent: bool
    answers: frozenset[int] = frozenset()  # non-2xx statuses whose body is the answer (/ready's 503)


@dataclass(slots=True)
class _Attempts:
    """One call's attempts: what the next may take (:meth:`timeout`) and what follows each outcome."""

    call: _Call
    policy: RetryPolicy
    total_s: float
    connect_s: float
    read_s: float
    clock: Callable[[], float]
    wall_clock: Callable[[], float]
    rng: random.Random
    on_retry: Callable[[RetryEvent], None] | None
    deadline: float = 0.0
    attempt: int = 0

    def __post_init__(self) -> None:
        self.deadline = self.clock() + self.total_s

    def remaining(self) -> float:
        return self.deadline - self.clock()

    def timeout(self) -> httpx.Timeout:
        """The next attempt's timeouts (each cut to the time left), or :class:`RagTimeout` when none is."""
        left = self.remaining()
        if left <= 0:
            raise RagTimeout(
                f"{self.call.method} {self.call.path}: the deadline of {self.total_s:g} s passed "
                f"after {self.attempt} attempt(s)",
                attempts=self.attempt,
            )
        self.attempt += 1
        return httpx.Timeout(min(self.read_s, left), connect=min(self.connect_s, left), pool=left)

    def after_response(self, response: httpx.Response) -> float | None:
        """None: ``response`` is the answer. Else the seconds to wait before the next attempt; or the
        typed error of the refusal when it is not tried again."""
        status = response.status_code
        if status < 400 or status in self.call.answers:
            return None
        retry_after = parse_retry_after(response.headers.get("retry-after"), now=self.wall_clock())
        decision = decide(
            self.policy,
            attempt=self.attempt,
            status=status,
            retry_after_s=retry_after,
            remaining_s=self.remaining(),
            rng=self.rng,
            idempotent=self.call.idempotent,
        )
        if decision.wait_s is None:
            if status in RETRY_STATUSES:
                log.info("%s %s: not retried: %s", self.call.method, self.call.path, decision.reason)
            raise http_error(
                status,
                _body(response),
                request_id=response.headers.get("x-request-id"),
                retry_after_s=retry_after,
                attempts=self.attempt,
            )
        return self._retrying(status, retry_after, decision.wait_s, decision.reason)

    def after_transport_error(self, exc: httpx.TransportError) -> float:
        """The seconds to wait before trying again after ``exc``, or the client's error for it."""
        # nothing reached the server when the connection (or a pooled one) could not be had
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        what = f"{self.call.method} {self.call.path}: {type(exc).__name__}: {exc}"
        if isinstance(exc, httpx.TimeoutException) and sent:  # a read/write timeout: the server is slow
            raise RagTimeout(what, attempts=self.attempt) from exc
        decision = decide(
            self.policy,
            attempt=self.attempt,
            status=None,
            retry_after_s=None,
            remaining_s=self.remaining(),
            rng=self.rng,
            sent=sent,
            idempotent=self.call.idempotent,
        )
        if decision.wait_s is None:
            kind = RagTimeout if isinstance(exc, httpx.TimeoutException) else RagTransportError
            raise kind(f"{what} ({decision.reason})", attempts=self.attempt) from exc
        return self._retrying(None, None, decision.wait_s, decision.reason)

    def deadline_passed(self, exc: BaseException) -> RagTimeout:
        what = f"{self.call.method} {self.call.path}: the deadline of {self.total_s:g} s passed"
        error = RagTimeout(f"{what} during attempt {self.attempt}", attempts=self.attempt)
        error.__cause__ = exc
        return error

    def _retrying(self, status: int | None, retry_after: float | None, wait: float, reason: str) -> float:
        event = RetryEvent(self.call.method, self.call.path, self.attempt, status, retry_after, wait, reason)
        log.info("%s %s: %s", self.call.method, self.call.path, reason)
        if self.on_retry is not None:
            self.on_retry(event)
        return wait


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        raise RagProtocolError(
            f"expected JSON, got {response.headers.get('content-type')!r}: {response.text[:200]!r}"
        ) from exc


class _ClientBase:
    """What both clients share: configuration, the requests each call makes, reading the answers."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        principal: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(
                f"base_url must be an http(s) URL like 'http://localhost:8000', got {base_url!r}"
            )
        if api_key is not None and not api_key.strip():
            raise ValueError("api_key must be a tenant API key (non-blank), or None for health/ready only")
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.principal = principal
        self.timeouts = timeouts or Timeouts()
        self.retry = retry or RetryPolicy()
        self.on_retry = on_retry
        self._clock = clock
        self._wall_clock = wall_clock
        self._rng = rng or random.Random()

    def _headers(self, *, auth: bool, principal: str | None, request_id: str | None) -> dict[str, str]:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if auth:
            if self.api_key is None:
                raise ValueError("this call needs the tenant API key: RagClient(base_url, api_key=...)")
            headers["Authorization"] = f"Bearer {self.api_key}"
            who = principal if principal is not None else self.principal
            if who is not None:
                headers[PRINCIPAL_HEADER] = who
        if request_id is not None:
            headers["X-Request-ID"] = request_id
        return headers

    def _query_call(
        self,
        query: str,
        *,
        top_k: int,
        filters: Mapping[str, FilterValue] | None,
        profile: str | None,
        answer: bool,
        session_id: str | None,
        fields: Mapping[str, Any] | None,
        principal: str | None,
        request_id: str | None,
    ) -> _Call:
        body: dict[str, Any] = {"query": query, "top_k": top_k}
        if filters is not None:
            body["filters"] = {k: list(v) if isinstance(v, list | tuple) else v for k, v in filters.items()}
        if profile is not None:
            body["profile"] = profile
        if answer:
            body["answer"] = True
        if session_id is not None:
            body["session_id"] = session_id
        if fields:
            clash = sorted(QUERY_FIELDS & fields.keys())
            if clash:
                raise ValueError(
                    f"fields= is for request fields this client does not name; use the "
                    f"keyword argument for {clash}"
                )
            body.update(fields)
        headers = self._headers(auth=True, principal=principal, request_id=request_id)
        return _Call("POST", "/query", body, headers, idempotent=True)

    def _feedback_call(
        self,
        request_id: str,
        *,
        rating: float | None,
        clicked: Sequence[str] | None,
        relevance: Mapping[str, float] | None,
        principal: str | None,
    ) -> _Call:
        body: dict[str, Any] = {"request_id": request_id}
        if rating is not None:
            body["rating"] = rating
        if clicked is not None:
            body["clicked"] = list(clicked)
        if relevance is not None:
            body["relevance"] = dict(relevance)
        headers = self._headers(auth=True, principal=principal, request_id=None)
        # one feedback per request: a connection lost after sending may have been applied already
        return _Call("POST", "/feedback", body, headers, idempotent=False)

    def _get_call(self, path: str, answers: frozenset[int] = frozenset()) -> _Call:
        headers = self._headers(auth=False, principal=None, request_id=None)
        return _Call("GET", path, None, headers, idempotent=True, answers=answers)

    def _attempts(self, call: _Call, timeout_s: float | None) -> _Attempts:
        if timeout_s is not None and not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        return _Attempts(
            call,
            self.retry,
            timeout_s if timeout_s is not None else self.timeouts.total_s,
            self.timeouts.connect_s,
            self.timeouts.read_s,
            self._clock,
            self._wall_clock,
            self._rng,
            self.on_retry,
        )

    def _url(self, call: _Call) -> str:
        return self.base_url + call.path


class RagClient(_ClientBase):
    """The sync client. ``http``: an ``httpx.Client`` of yours (proxies, TLS, event hooks), left open on
    :meth:`close`; by default the client owns one. Use it as a context manager, or :meth:`close` it."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        principal: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            principal=principal,
            timeouts=timeouts,
            retry=retry,
            on_retry=on_retry,
            clock=clock,
            wall_clock=wall_clock,
            rng=rng,
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.Client()
        self._sleep = sleep

    def query(
        self,
        query: str,
        *,
        top_k: int = 10,
        filters: Mapping[str, FilterValue] | None = None,
        profile: str | None = None,
        answer: bool = False,
        session_id: str | None = None,
        fields: Mapping[str, Any] | None = None,
        principal: str | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> QueryResult:
        """``POST /query``: the ``top_k`` best passages of the tenant for ``query``. ``filters``: metadata
        field → value or list of values (fields ANDed, values ORed); ``profile``: ``latency``,
        ``throughput``, ``cost`` or ``balanced``; ``fields``: further request fields a newer server takes;
        ``principal``: this call's ``X-RAG-Principal`` (else the client's)."""
        call = self._query_call(
            query,
            top_k=top_k,
            filters=filters,
            profile=profile,
            answer=answer,
            session_id=session_id,
            fields=fields,
            principal=principal,
            request_id=request_id,
        )
        return QueryResult.from_json(_json(self._send(call, timeout_s)))

    def feedback(
        self,
        request_id: str,
        *,
        rating: float | None = None,
        clicked: Sequence[str] | None = None,
        relevance: Mapping[str, float] | None = None,
        principal: str | None = None,
        timeout_s: float | None = None,
    ) -> FeedbackResult:
        """``POST /feedback`` on the answer ``request_id``: graded ``relevance`` (doc id → 0..3), else
        ``clicked`` doc ids, else a 1-5 ``rating``."""
        call = self._feedback_call(
            request_id, rating=rating, clicked=clicked, relevance=relevance, principal=principal
        )
        return FeedbackResult.from_json(_json(self._send(call, timeout_s)))

    def health(self, *, timeout_s: float | None = None) -> bool:
        """``GET /health``: the process is up."""
        body = _json(self._send(self._get_call("/health"), timeout_s))
        return isinstance(body, Mapping) and body.get("status") == "ok"

    def ready(self, *, timeout_s: float | None = None) -> Readiness:
        """``GET /ready``: read whether ready (200) or not yet (503, with the reason)."""
        call = self._get_call("/ready", answers=frozenset({503}))
        return Readiness.from_json(_json(self._send(call, timeout_s)))

    def _send(self, call: _Call, timeout_s: float | None) -> httpx.Response:
        attempts = self._attempts(call, timeout_s)
        while True:
            timeout = attempts.timeout()
            try:
                response = self._http.request(
                    call.method, self._url(call), json=call.body, headers=call.headers, timeout=timeout
                )
            except httpx.TransportError as exc:
                self._sleep(attempts.after_transport_error(exc))
                continue
            wait = attempts.after_response(response)
            if wait is None:
                return response
            self._sleep(wait)

    def close(self) -> None:
        if self._owns_http:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class AsyncRagClient(_ClientBase):
    """The asyncio client: the same calls as :class:`RagClient`, awaited. Each attempt also runs under
    ``asyncio.timeout`` of the time left, so the deadline holds across a slow answer's bytes too."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        principal: str | None = None,
        timeouts: Timeouts | None = None,
        retry: RetryPolicy | None = None,
        on_retry: Callable[[RetryEvent], None] | None = None,
        http: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            principal=principal,
            timeouts=timeouts,
            retry=retry,
            on_retry=on_retry,
            clock=clock,
            wall_clock=wall_clock,
            rng=rng,
        )
        self._owns_http = http is None
        self._http = http if http is not None else httpx.AsyncClient()
        self._sleep = sleep

    async def query(
        self,
        query: str,
        *,
        top_k: int = 10,
        filters: Mapping[str, FilterValue] | None = None,
        profile: str | None = None,
        answer: bool = False,
        session_id: str | None = None,
        fields: Mapping[str, Any] | None = None,
        principal: str | None = None,
        request_id: str | None = None,
        timeout_s: float | None = None,
    ) -> QueryResult:
        """As :meth:`RagClient.query`."""
        call = self._query_call(
            query,
            top_k=top_k,
            filters=filters,
            profile=profile,
            answer=answer,
            session_id=session_id,
            fields=fields,
            principal=principal,
            request_id=request_id,
        )
        return QueryResult.from_json(_json(await self._send(call, timeout_s)))

    async def feedback(
        self,
        request_id: str,
        *,
        rating: float | None = None,
        clicked: Sequence[str] | None = None,
        relevance: Mapping[str, float] | None = None,
        principal: str | None = None,
        timeout_s: float | None = None,
    ) -> FeedbackResult:
        """As :meth:`RagClient.feedback`."""
        call = self._feedback_call(
            request_id, rating=rating, clicked=clicked, relevance=relevance, principal=principal
        )
        return FeedbackResult.from_json(_json(await self._send(call, timeout_s)))

    async def health(self, *, timeout_s: float | None = None) -> bool:
        body = _json(await self._send(self._get_call("/health"), timeout_s))
        return isinstance(body, Mapping) and body.get("status") == "ok"

    async def ready(self, *, timeout_s: float | None = None) -> Readiness:
        call = self._get_call("/ready", answers=frozenset({503}))
        return Readiness.from_json(_json(await self._send(call, timeout_s)))

    async def _send(self, call: _Call, timeout_s: float | None) -> httpx.Response:
        attempts = self._attempts(call, timeout_s)
        while True:
            timeout = attempts.timeout()
            try:
                async with asyncio.timeout(attempts.remaining()):
                    response = await self._http.request(
                        call.method, self._url(call), json=call.body, headers=call.headers, timeout=timeout
                    )
            except TimeoutError as exc:
                raise attempts.deadline_passed(exc) from exc
            except httpx.TransportError as exc:
                await self._sleep(attempts.after_transport_error(exc))
                continue
            wait = attempts.after_response(response)
            if wait is None:
                return response
            await self._sleep(wait)

    async def aclose(self) -> None:
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
