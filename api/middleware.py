"""Pure-ASGI middleware: request ids, admin authentication, body-size caps, one structured log line and
metrics per request.

Order (invariants): a request to ``/admin`` or ``/jobs`` is authenticated (the admin token, through
:func:`api.security.principal_of`) before a byte of its body is read, so an unauthenticated client cannot
make the server read or buffer a body; only then is the declared length checked against the route's cap,
and the body counted against it while the app reads it. Caps: document ingest
(``POST /admin/tenants/{tenant}/documents``) ``max_ingest_body_bytes``; every other admin route
``max_admin_body_bytes``; everything else ``max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.errors import ApiError, ErrorBody, ErrorDetail, FieldError
from api.security import check_admin, principal_of
from rag import metrics
from rag.logs import request_id_var, tenant_var
from rag.service.auth import KeyRing

log = logging.getLogger("rag.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")  # checked with fullmatch: nothing after it, not even "\n"
ADMIN_PREFIXES = ("/admin", "/jobs")  # every route behind require_admin lives under these (a test checks)
_INGEST = re.compile(r"/admin/tenants/[^/]+/documents")
_CLOSE = {"Connection": "close"}  # on answers sent before the body is read: the server stops reading it


def needs_admin(path: str) -> bool:
    """Whether ``path`` is an admin route (``/admin``, ``/admin/…``, ``/jobs``, ``/jobs/…``)."""
    return any(path == prefix or path.startswith(prefix + "/") for prefix in ADMIN_PREFIXES)


def is_ingest(method: str, path: str) -> bool:
    """The one route that takes large bodies: ``POST /admin/tenants/{tenant}/documents``."""
    return method == "POST" and _INGEST.fullmatch(path) is not None


def _error_body(code: str, message: str, request_id: str, limit: int | None = None) -> bytes:
    """The common error shape (``api.errors.ErrorBody``), for answers sent before the app runs."""
    fields = [FieldError(field="body", message=message, limit=limit)] if limit is not None else []
    detail = ErrorDetail(code=code, message=message, fields=fields)
    return ErrorBody(error=detail, request_id=request_id).model_dump_json().encode()


class RequestContextMiddleware:
    """Takes ``X-Request-ID`` (if well-formed) or makes one; returns it on every response; refuses an admin
    request without the admin token (401/403) before reading its body; caps the body at the route's limit
    with a 413 naming the limit."""

    def __init__(
        self, app: ASGIApp, *, keys: KeyRing, max_body: int, max_admin_body: int, max_ingest_body: int
    ) -> None:
        self.app = app
        self.keys = keys
        self.max_body = max_body
        self.max_admin_body = max_admin_body
        self.max_ingest_body = max_ingest_body

    def limit_for(self, method: str, path: str) -> int:
        if is_ingest(method, path):
            return self.max_ingest_body
        return self.max_admin_body if needs_admin(path) else self.max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        tenant_token = tenant_var.set(None)
        path: str = scope["path"]
        limit = self.limit_for(scope["method"], path)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        async def respond(
            code: int, error: str, text: str, cap: int | None = None, extra: dict[str, str] | None = None
        ) -> None:
            body = _error_body(error, text, request_id, cap)
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": code,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        *((k.lower().encode(), v.encode()) for k, v in (extra or {}).items()),
                    ],
                }
            )
            await send_with_id({"type": "http.response.body", "body": body})

        too_large = False
        received = 0

        async def counted_receive() -> Message:
            # over the cap: answer 413 now and tell the app the client is gone (it stops reading)
            nonlocal received, too_large
            if too_large:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    if not response_started:
                        await respond(
                            413,
                            "payload_too_large",
                            f"request body is over the limit of {limit} bytes",
                            limit,
                            extra=_CLOSE,
                        )
                    return {"type": "http.disconnect"}
            return message

        async def app_send(message: Message) -> None:
            if not too_large:  # after a 413 the app's own response (to a "disconnected" client) is dropped
                await send_with_id(message)

        try:
            if needs_admin(path):
                try:  # before the body: nothing of an unauthenticated request is read
                    check_admin(principal_of(self.keys, headers.get("authorization")))
                except ApiError as exc:
                    # the body stays unread, so the connection cannot carry another request: close it
                    await respond(exc.status, exc.code, exc.message, extra={**exc.headers, **_CLOSE})
                    return
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                text = f"request body is {declared} bytes; the limit is {limit}"
                await respond(413, "payload_too_large", text, limit, extra=_CLOSE)
                return
            try:
                await self.app(scope, counted_receive, app_send)
            except (Exception, asyncio.CancelledError) as exc:
                if isinstance(exc, asyncio.CancelledError) and _cancelling():
                    raise  # this request's own cancellation (server shutdown): not an error to answer
                if too_large:
                    return
                log.exception("unhandled error")
                metrics.ERRORS.labels("api", type(exc).__name__).inc()
                if not response_started:
                    await respond(500, "internal", "internal error; the request id identifies it in the logs")
        finally:
            elapsed = time.perf_counter() - started
            route = _route_template(scope)
            metrics.HTTP_REQUESTS.labels(route, scope["method"], str(status)).inc()
            metrics.HTTP_LATENCY.labels(route).observe(elapsed)
            log.info(
                "request",
                extra={
                    "method": scope["method"],
                    "path": route,
                    "status": status,
                    "ms": round(elapsed * 1000, 2),
                },
            )
            request_id_var.reset(token)
            tenant_var.reset(tenant_token)


def _cancelling() -> bool:
    """Whether the running task is being cancelled; a CancelledError without that came from work it
    awaited (e.g. a shared flight cancelled under it) and is answered as a 500, never uvicorn's text one."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


def _route_template(scope: Scope) -> str:
    """The matched route's template (bounded label), or 'unmatched'."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"
