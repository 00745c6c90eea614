"""POST /query and POST /query/stream: translate HTTP to a QueryRequest and the answer back."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from api.errors import declared
from api.schemas import QueryBody, QueryResponse
from api.security import Tenant, service_of, take_rate_token
from rag.logs import request_id_var
from rag.retrieval.pipeline import RetrievalUnavailable, StepEvent, StepFailed
from rag.routing.budgets import OverBudgetError
from rag.service.service import NotReady, QueryAnswer, QueryRequest, RetrievalService

log = logging.getLogger(__name__)
router = APIRouter(tags=["query"])
ERRORS = declared(401, 403, 413, 422, 429, 503)


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def to_response(answer: QueryAnswer, request_id: str) -> QueryResponse:
    return QueryResponse.model_validate(
        {
            "request_id": request_id,
            "results": [asdict(r) for r in answer.results],
            "route": answer.route,
            "plan": answer.plan,
            "degraded": answer.degraded,
            "cache": answer.cache,
            "timings_ms": answer.timings_ms,
            "cost": answer.cost,
            "index_version": answer.index_version,
            "took_ms": answer.took_ms,
            "answer": answer.answer,
        }
    )


async def admit(service: RetrievalService, tenant: str, body: QueryBody) -> QueryRequest:
    """Everything that can refuse a query before work starts: readiness, rate limit, filter shape."""
    request = QueryRequest(
        tenant, body.query, body.top_k, body.filters, body.profile, body.answer, body.session_id
    )
    service.check(request)  # NotReady → 503, FilterError → 422 (api.errors)
    await take_rate_token(service, tenant)
    return request


@router.post("/query", response_model=QueryResponse, responses=ERRORS)
async def query(body: QueryBody, request: Request, tenant: Tenant) -> QueryResponse:
    """Retrieve the ``top_k`` best passages of the caller's tenant for ``query``."""
    service = service_of(request)
    query_request = await admit(service, tenant, body)
    answer = await service.query(query_request)  # NotReady, RetrievalUnavailable → 503 (api.errors)
    return to_response(answer, request_id_var.get() or "")


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _step_data(event: StepEvent) -> dict[str, Any]:
    return {"step": event.step, "ms": round(event.ms, 3), **event.detail}


STREAM_DOC = {
    200: {
        "description": (
            "Server-Sent Events: one event per pipeline step as it completes (event name = step name, e.g. "
            "plan, retrieve.bm25, embed, retrieve.dense, fuse, rerank; data = {step, ms, …}), then "
            "`result` (data = the /query response) or `error` (data = {code, message})."
        ),
        "content": {
            "text/event-stream": {
                "schema": {  # one Server-Sent Event
                    "type": "object",
                    "required": ["event", "data"],
                    "properties": {
                        "event": {"type": "string", "description": "a step name, `result` or `error`"},
                        "data": {"type": "string", "contentMediaType": "application/json"},
                    },
                }
            }
        },
    },
    **declared(401, 403, 413, 422, 429, 503, json_content=True),
}


@router.post("/query/stream", response_class=EventStreamResponse, responses=STREAM_DOC)
async def query_stream(body: QueryBody, request: Request, tenant: Tenant) -> EventStreamResponse:
    """Like /query, streamed: each step as it completes, then the result. Closing the connection cancels
    the steps not yet started."""
    service = service_of(request)
    query_request = await admit(service, tenant, body)
    request_id = request_id_var.get() or ""
    return EventStreamResponse(
        _events(service, query_request, request_id), headers={"Cache-Control": "no-cache"}
    )


async def _events(
    service: RetrievalService, query_request: QueryRequest, request_id: str
) -> AsyncIterator[bytes]:
    events: asyncio.Queue[StepEvent] = asyncio.Queue()
    task = asyncio.create_task(service.query(query_request, on_step=events.put_nowait))
    waiter: asyncio.Task[StepEvent] | None = None
    try:
        while not task.done() or not events.empty():
            if events.empty():
                waiter = asyncio.create_task(events.get())
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    await _cancel(waiter)
                    continue
                event = waiter.result()
            else:
                event = events.get_nowait()
            yield sse(event.step, _step_data(event))
        try:
            answer = task.result()
        except StepFailed as exc:
            yield sse(
                "error",
                {"code": "step_failed", "step": exc.step, "message": str(exc), "request_id": request_id},
            )
            return
        except NotReady as exc:
            yield sse("error", {"code": "not_ready", "message": str(exc), "request_id": request_id})
            return
        except RetrievalUnavailable as exc:
            yield sse(
                "error", {"code": "retrieval_unavailable", "message": str(exc), "request_id": request_id}
            )
            return
        except OverBudgetError as exc:
            yield sse("error", {"code": "budget_exceeded", "message": str(exc), "request_id": request_id})
            return
        except Exception as exc:  # reported in the stream: the 200 status line has already gone out
            log.exception("query failed")
            yield sse("error", {"code": "internal", "message": type(exc).__name__, "request_id": request_id})
            return
        yield sse("result", to_response(answer, request_id).model_dump(mode="json"))
    finally:
        # the client went away (or we are done): no further step starts, and nothing is left pending
        task.cancel()
        if waiter is not None:
            await _cancel(waiter)
        if task.done() and not task.cancelled():
            task.exception()  # retrieved: a failure after the client left is not "never retrieved"


async def _cancel(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended (a task cancelled but never run again would be
    destroyed pending). Called while this coroutine is itself being cancelled, the wait may be cut
    short (the caller's CancelledError goes on), but the cancel is delivered: the loop ends the task on
    its next turn."""
    if task.done():
        return
    task.cancel()
    await asyncio.wait({task})
