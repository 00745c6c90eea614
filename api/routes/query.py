"""POST /query and POST /query/stream: translate HTTP to a QueryRequest and the answer back."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse

from api.deps import Limits, Queries, query_parts
from api.errors import declared, stream_error
from api.schemas import QueryBody, QueryResponse
from api.security import QUERY_DOC, QueryAuth, QueryCaller, StreamCaller, take_rate_token
from rag.logs import request_id_var
from rag.retrieval.shaping import GroupBy, ResultShape
from rag.retrieval.step_runner import StepEvent
from rag.service.answer import QueryAnswer, QueryRequest
from rag.service.limits import RateLimits
from rag.service.queries import QueryHandler

router = APIRouter(tags=["query"])
ERRORS = declared(401, 403, 413, 422, 429, 503)


class EventStreamResponse(StreamingResponse):
    media_type = "text/event-stream"


def to_response(answer: QueryAnswer) -> QueryResponse:
    return QueryResponse.model_validate(answer, from_attributes=True)


async def admit(queries: QueryHandler, limits: RateLimits, auth: QueryAuth, body: QueryBody) -> QueryRequest:
    """Everything that can refuse a query before work starts: readiness, rate limit, filter shape."""
    tenant = auth.tenant
    request = QueryRequest(
        tenant,
        body.query,
        body.top_k,
        body.filters,
        body.profile,
        body.answer,
        body.session_id,
        caller=auth.caller,  # document ACLs (rag.acl): who the query is for
        min_score=body.min_score,
        shape=ResultShape(GroupBy(body.group_by) if body.group_by else None, body.diversity),
    )
    queries.check(request)  # NotReady → 503, FilterError → 422 (api.errors)
    await take_rate_token(limits, tenant)
    return request


@router.post("/query", response_model=QueryResponse, responses=ERRORS, openapi_extra=QUERY_DOC)
async def query(auth: QueryCaller, body: QueryBody, request: Request) -> Response:
    """Retrieve the ``top_k`` best passages of the caller's tenant for ``query``: of those the caller
    (``X-RAG-Principal``, or the key's bound principal) may see."""
    # the hot route: one dependency (the tenant and caller, checked before the body), its parts in one
    # lookup, the answer encoded once (response_model documents it only)
    parts = query_parts(request)
    query_request = await admit(parts.queries, parts.limits, auth, body)
    answer = to_response(await parts.queries.query(query_request))  # errors: api.errors.ERROR_TABLE
    return Response(answer.model_dump_json(), media_type="application/json")


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _step_data(event: StepEvent) -> dict[str, Any]:
    return {"step": str(event.step), "ms": round(event.ms, 3), **event.detail}


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
async def query_stream(
    body: QueryBody, auth: StreamCaller, queries: Queries, limits: Limits
) -> EventStreamResponse:
    """Like /query, streamed: each step as it completes, then the result. Closing the connection cancels
    the steps not yet started."""
    query_request = await admit(queries, limits, auth, body)
    request_id = request_id_var.get() or ""
    return EventStreamResponse(
        _events(queries, query_request, request_id), headers={"Cache-Control": "no-cache"}
    )


async def _events(
    queries: QueryHandler, query_request: QueryRequest, request_id: str
) -> AsyncIterator[bytes]:
    events: asyncio.Queue[StepEvent] = asyncio.Queue()
    task = asyncio.create_task(queries.query(query_request, on_step=events.put_nowait))
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
            yield sse(str(event.step), _step_data(event))
        try:
            answer = task.result()
        except Exception as exc:  # reported in the stream: the 200 status line has already gone out
            yield sse("error", stream_error(exc, request_id))
            return
        yield sse("result", to_response(answer).model_dump(mode="json"))
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
