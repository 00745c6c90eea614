"""The one error shape every route returns, the one table of how a domain error reads (status, code,
message, ``Retry-After``) for the HTTP handlers and the event stream alike, and the OpenAPI declarations
of each status code."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.acl import AclError
from rag.errors import RagError
from rag.index.given_vectors import VectorError
from rag.logs import request_id_var
from rag.resilience.redis import RedisUnavailable
from rag.retrieval.degradation_ladder import RetrievalUnavailable
from rag.retrieval.filters import FilterError
from rag.retrieval.shaping import ShapeError
from rag.retrieval.step_runner import StepFailed
from rag.rollout.config import ConfigError
from rag.routing.budgets import OverBudgetError
from rag.service.lifecycle import NotReady

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str = Field(description="dotted path of the offending field, e.g. 'body.top_k'")
    message: str
    limit: Any | None = Field(None, description="the limit that was exceeded, when there is one")


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable: invalid_request, unauthorized, forbidden, …")
    message: str
    fields: list[FieldError] = Field(default_factory=list)


class ErrorBody(BaseModel):
    error: ErrorDetail
    request_id: str | None = None


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        fields: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.fields = fields or []
        self.headers = headers or {}


def error_response(
    status: int,
    code: str,
    message: str,
    fields: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(
        error=ErrorDetail(code=code, message=message, fields=fields or []), request_id=request_id_var.get()
    )
    return JSONResponse(jsonable_encoder(body), status_code=status, headers=headers)


async def api_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.code, exc.message, exc.fields, exc.headers)


_LIMIT_KEYS = ("le", "ge", "lt", "gt", "max_length", "min_length", "pattern", "expected")


def _limit(ctx: dict[str, Any] | None) -> Any:
    for key in _LIMIT_KEYS:
        if ctx and key in ctx:
            return ctx[key]
    return None


async def validation_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    fields = [
        FieldError(
            field=".".join(str(part) for part in e.get("loc", ())),
            message=e.get("msg", "invalid"),
            limit=_limit(e.get("ctx")),
        )
        for e in exc.errors()
    ]
    summary = "; ".join(f"{f.field}: {f.message}" for f in fields[:5])
    return error_response(422, "invalid_request", f"invalid request: {summary}", fields)


async def http_error_handler(_: Request, exc: Exception) -> JSONResponse:
    """Framework errors in the common shape. A body FastAPI cannot parse (not UTF-8, not JSON) is a 422 on
    ``body``, like every other invalid input."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        field = FieldError(field="body", message="the body is not valid UTF-8 JSON", limit=None)
        return error_response(422, "invalid_request", f"invalid request: {exc.detail}", [field])
    codes = {404: "not_found", 405: "method_not_allowed"}
    return error_response(
        exc.status_code,
        codes.get(exc.status_code, "http_error"),
        str(exc.detail),
        headers=dict(exc.headers or {}),
    )


# -- the one table: a domain error → status, code, message, Retry-After ----------------------------------
@dataclass(frozen=True, slots=True)
class ErrorRule:
    """How one kind of domain error reads, in an HTTP response and in the event stream alike."""

    status: int
    code: str
    message: Callable[[Any], str] = str
    retry_after: Callable[[Any], str] | None = None  # seconds, as the header's value
    fields: Callable[[Any], list[FieldError]] | None = None  # the offending request fields
    detail: Callable[[Any], dict[str, str]] | None = None  # what the stream's error event adds
    warn: bool = False  # log it (a dependency failed), apart from the request log line


@dataclass(frozen=True, slots=True)
class Refusal:
    """A domain error rendered by its :class:`ErrorRule`."""

    status: int
    code: str
    message: str
    headers: dict[str, str]
    fields: list[FieldError]
    detail: dict[str, str]


def _seconds(n: float) -> Callable[[Any], str]:
    return lambda _: f"{n:g}"


ERROR_TABLE: dict[type[RagError], ErrorRule] = {
    NotReady: ErrorRule(503, "not_ready", retry_after=_seconds(5)),
    FilterError: ErrorRule(
        422,
        "invalid_request",
        fields=lambda e: [FieldError(field=f"body.{e.field}", message=str(e), limit=None)],
    ),
    AclError: ErrorRule(  # an ACL or principal of the wrong shape (document ACLs, rag.acl)
        422,
        "invalid_request",
        fields=lambda e: [FieldError(field=e.field, message=str(e), limit=e.limit)],
    ),
    StepFailed: ErrorRule(
        503,
        "step_failed",
        message=lambda e: f"a dependency failed: {e}",
        retry_after=_seconds(1),
        detail=lambda e: {"step": str(e.step)},
        warn=True,
    ),
    RetrievalUnavailable: ErrorRule(
        503,
        "retrieval_unavailable",
        message=lambda e: f"no retriever could answer: {e}",
        retry_after=lambda e: str(e.retry_after_s),
        warn=True,
    ),
    ShapeError: ErrorRule(  # min_score on an uncalibrated collection (ranges are checked by the schema)
        422,
        "invalid_request",
        fields=lambda e: [FieldError(field=f"body.{e.field}", message=str(e), limit=None)],
    ),
    VectorError: ErrorRule(  # given vectors that do not fit the collection (POST .../documents)
        422,
        "invalid_vectors",
        fields=lambda e: [FieldError(field=f"body.{e.field}", message=str(e), limit=e.limit)],
    ),
    RedisUnavailable: ErrorRule(503, "redis_unavailable", retry_after=_seconds(1)),
    OverBudgetError: ErrorRule(429, "budget_exceeded", retry_after=lambda e: str(e.retry_after_s)),
    ConfigError: ErrorRule(  # only a rollout config is validated within a request (PUT /admin/rollout)
        422,
        "invalid_config",
        message=lambda e: f"rollout config refused, the previous one keeps serving: {e}",
    ),
}


def refusal_of(exc: BaseException) -> Refusal | None:
    """``exc`` rendered by the rule of its nearest class in :data:`ERROR_TABLE`; None for any other
    error (a bug: 500 over HTTP, ``internal`` in the stream)."""
    rule = next((ERROR_TABLE[c] for c in type(exc).__mro__ if c in ERROR_TABLE), None)
    if rule is None:
        return None
    refusal = Refusal(
        status=rule.status,
        code=rule.code,
        message=rule.message(exc),
        headers={"Retry-After": rule.retry_after(exc)} if rule.retry_after is not None else {},
        fields=rule.fields(exc) if rule.fields is not None else [],
        detail=rule.detail(exc) if rule.detail is not None else {},
    )
    if rule.warn:
        log.warning("%s: %s", refusal.code, refusal.message)
    return refusal


async def domain_error_handler(_: Request, exc: Exception) -> JSONResponse:
    refusal = refusal_of(exc)
    assert refusal is not None  # installed for the classes of ERROR_TABLE only
    return error_response(refusal.status, refusal.code, refusal.message, refusal.fields, refusal.headers)


def stream_error(exc: BaseException, request_id: str) -> dict[str, Any]:
    """The data of the event stream's ``error`` event (the 200 status line has already gone out)."""
    refusal = refusal_of(exc)
    if refusal is None:
        log.error("query failed", exc_info=exc)
        return {"code": "internal", "message": type(exc).__name__, "request_id": request_id}
    return {"code": refusal.code, **refusal.detail, "message": refusal.message, "request_id": request_id}


def install_handlers(app: FastAPI) -> None:
    """How each error becomes HTTP, in one place for every route."""
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    for error in ERROR_TABLE:
        app.add_exception_handler(error, domain_error_handler)


def declared(*statuses: int, json_content: bool = False) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the error statuses a route can return. ``json_content``: state the JSON
    media type explicitly (for routes whose success response is not JSON, e.g. an event stream)."""
    descriptions = {
        401: "Missing or unknown credentials",
        403: "Valid credentials without the scope this route needs",
        404: "No such resource",
        413: "Request body over the size limit",
        422: "A field is invalid or over its limit (the response names the field and the limit)",
        429: "Rate limit or hard spend budget exceeded (see Retry-After and error.code)",
        503: "Not ready: loading, or no index published yet",
    }
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        entry: dict[str, Any] = {"description": descriptions[status]}
        if json_content:
            ref = {"$ref": "#/components/schemas/ErrorBody"}  # the /query routes put ErrorBody there
            entry["content"] = {"application/json": {"schema": ref}}
        else:
            entry["model"] = ErrorBody
        if status == 429:
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        out[status] = entry
    return out
