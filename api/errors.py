"""The one error shape every route returns, and the OpenAPI declarations of each status code."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.logs import request_id_var
from rag.resilience.guarded_redis import RedisUnavailable
from rag.retrieval.filters import FilterError
from rag.retrieval.pipeline import RetrievalUnavailable, StepFailed
from rag.routing.budgets import OverBudgetError
from rag.service.service import NotReady

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


async def not_ready_handler(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, "not_ready", str(exc), headers={"Retry-After": "5"})


async def filter_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, FilterError)
    field = FieldError(field=f"body.{exc.field}", message=str(exc), limit=None)
    return error_response(422, "invalid_request", str(exc), [field])


async def step_failed_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StepFailed)
    log.warning("query failed at step %s: %s", exc.step, exc)
    return error_response(503, "step_failed", f"a dependency failed: {exc}", headers={"Retry-After": "1"})


async def retrieval_unavailable_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RetrievalUnavailable)
    log.warning("no retriever available: %s", exc)
    return error_response(
        503, "retrieval_unavailable", f"no retriever could answer: {exc}", headers={"Retry-After": "1"}
    )


async def redis_unavailable_handler(_: Request, exc: Exception) -> JSONResponse:
    return error_response(503, "redis_unavailable", str(exc), headers={"Retry-After": "1"})


async def over_budget_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, OverBudgetError)
    return error_response(429, "budget_exceeded", str(exc), headers={"Retry-After": str(exc.retry_after_s)})


def install_handlers(app: FastAPI) -> None:
    """How each error the service raises becomes HTTP, in one place for every route."""
    app.add_exception_handler(ApiError, api_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(NotReady, not_ready_handler)
    app.add_exception_handler(FilterError, filter_error_handler)
    app.add_exception_handler(StepFailed, step_failed_handler)
    app.add_exception_handler(RetrievalUnavailable, retrieval_unavailable_handler)
    app.add_exception_handler(RedisUnavailable, redis_unavailable_handler)
    app.add_exception_handler(OverBudgetError, over_budget_handler)


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
