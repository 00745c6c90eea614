"""Clients of the service's HTTP API: a typed Python client (sync and asyncio) and thin adapters for
LangChain (:mod:`rag.clients.langchain`, extra ``langchain``) and LlamaIndex (:mod:`rag.clients.llamaindex`,
extra ``llamaindex``).

The clients talk to a running ``rag serve`` over HTTP only and import nothing of the service, so they can
be used (and one day shipped) apart from it; they need ``httpx``, and each adapter its framework.
"""

from rag.clients.client import PRINCIPAL_HEADER, AsyncRagClient, RagClient, RetryEvent, Timeouts
from rag.clients.errors import (
    FieldError,
    Forbidden,
    InvalidRequest,
    NotFound,
    PayloadTooLarge,
    RagClientError,
    RagHTTPError,
    RagProtocolError,
    RagRequestError,
    RagServerError,
    RagTimeout,
    RagTransportError,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
)
from rag.clients.retry import NO_RETRY, RetryPolicy
from rag.clients.types import Answer, Cost, Degradation, FeedbackResult, QueryResult, Readiness, SearchResult

__all__ = [
    "NO_RETRY",
    "PRINCIPAL_HEADER",
    "Answer",
    "AsyncRagClient",
    "Cost",
    "Degradation",
    "FeedbackResult",
    "FieldError",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "PayloadTooLarge",
    "QueryResult",
    "RagClient",
    "RagClientError",
    "RagHTTPError",
    "RagProtocolError",
    "RagRequestError",
    "RagServerError",
    "RagTimeout",
    "RagTransportError",
    "RateLimited",
    "Readiness",
    "RetryEvent",
    "RetryPolicy",
    "SearchResult",
    "ServiceUnavailable",
    "Timeouts",
    "Unauthorized",
]
