"""What a client call raises. Every error derives from :class:`RagClientError`.

A refusal by the service is a :class:`RagHTTPError` carrying the service's error body (``code``,
``message``, and for invalid input the offending ``fields`` with their limits); 4xx are
:class:`RagRequestError` (fix the request: retrying will not help, except 429), 5xx :class:`RagServerError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class RagClientError(Exception):
    """Base of every error a client call raises."""


class RagProtocolError(RagClientError):
    """The service answered with a body that is not the expected JSON shape."""


class RagTransportError(RagClientError):
    """No answer: the connection failed (after the retries the call allowed)."""

    def __init__(self, message: str, *, attempts: int) -> None:
        super().__init__(message)
        self.attempts = attempts


class RagTimeout(RagTransportError):
    """The call's deadline (or a connect/read timeout) passed before an answer came."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One offending request field: ``field`` is its dotted path (``body.top_k``), ``limit`` the limit it
    broke when there is one (``100``, a pattern…)."""

    field: str
    message: str
    limit: Any = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" + (f" (limit {self.limit})" if self.limit is not None else "")


class RagHTTPError(RagClientError):
    """The service refused the call: ``status``, its error ``code`` (``invalid_request``,
    ``rate_limited``, ``not_ready``…), ``message``, the offending ``fields``, ``retry_after_s`` (from the
    ``Retry-After`` header), the ``request_id`` to quote to the operator, and how many ``attempts`` were
    made."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: tuple[FieldError, ...] = (),
        request_id: str | None = None,
        retry_after_s: float | None = None,
        attempts: int = 1,
    ) -> None:
        self.status, self.code, self.message = status, code, message
        self.fields = fields
        self.request_id = request_id
        self.retry_after_s = retry_after_s
        self.attempts = attempts
        detail = "; ".join(map(str, fields))
        super().__init__(f"{status} {code}: {message}" + (f" [{detail}]" if detail else ""))

    @property
    def field_names(self) -> list[str]:
        return [f.field for f in self.fields]


class RagRequestError(RagHTTPError):
    """4xx: the request is wrong (or not allowed now); see ``fields``."""


class Unauthorized(RagRequestError):
    """401: no key, or a key the service does not know."""


class Forbidden(RagRequestError):
    """403: the key may not do this (e.g. the admin token used to query, or a principal the key is not
    bound to)."""


class NotFound(RagRequestError):
    """404 (e.g. feedback for a request that no longer awaits it)."""


class PayloadTooLarge(RagRequestError):
    """413: the body is over the service's limit (``fields[0].limit`` names it)."""


class InvalidRequest(RagRequestError):
    """422: a field is invalid or over its limit; ``fields`` names each one and its limit."""


class RateLimited(RagRequestError):
    """429: over the tenant's rate limit or spend budget; ``retry_after_s`` says when to come back."""


class RagServerError(RagHTTPError):
    """5xx: the service could not answer."""


class ServiceUnavailable(RagServerError):
    """503: not ready, or no retriever could answer in time; ``retry_after_s`` says when to come back."""


_BY_STATUS: Mapping[int, type[RagHTTPError]] = {
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    413: PayloadTooLarge,
    422: InvalidRequest,
    429: RateLimited,
    503: ServiceUnavailable,
}


def http_error(
    status: int,
    body: Any,
    *,
    request_id: str | None,
    retry_after_s: float | None,
    attempts: int,
) -> RagHTTPError:
    """The typed error for a refusal with ``status`` and the (decoded JSON, or text) ``body``: the
    service's ``{"error": {"code", "message", "fields": [...]}, "request_id"}``, or whatever another hop
    (a proxy) answered, kept as the message."""
    kind = _BY_STATUS.get(status) or (RagRequestError if status < 500 else RagServerError)
    code, message = f"http_{status}", ""
    fields: tuple[FieldError, ...] = ()
    detail = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(detail, Mapping):
        code = str(detail.get("code") or code)
        message = str(detail.get("message") or "")
        raw_fields = detail.get("fields")
        if isinstance(raw_fields, list):
            fields = tuple(
                FieldError(str(f.get("field", "")), str(f.get("message", "")), f.get("limit"))
                for f in raw_fields
                if isinstance(f, Mapping)
            )
        body_id = body.get("request_id") if isinstance(body, Mapping) else None
        request_id = str(body_id) if body_id else request_id
    else:
        message = (body if isinstance(body, str) else repr(body))[:500]
    return kind(
        status,
        code,
        message,
        fields=fields,
        request_id=request_id,
        retry_after_s=retry_after_s,
        attempts=attempts,
    )
