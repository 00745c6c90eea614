"""The HTTP/1.1 protocol ``rag serve`` runs: uvicorn's httptools (llhttp, C) parser with a cap on the request
head (request line + headers).

Why not uvicorn's h11 protocol, which caps the head itself (``h11_max_incomplete_event_size``)? h11 parses in
pure Python: a trivial FastAPI route measured 0.35-0.50 server CPU-ms per request on h11 against 0.18-0.22 on
httptools (this 2-core machine, wrk, 32 connections), a large share of a cache hit's cost. uvicorn's httptools
protocol has no head cap of its own, and httptools keeps a header's partial name and value in memory until
it is complete, so a client could send one endless header. :class:`HeadCappedHttpToolsProtocol` counts the
bytes of each request's head as they arrive and feeds the parser no more than the cap: past it the client
gets ``431 Request Header Fields Too Large`` and the connection is closed. The cap is uvicorn's own setting
``h11_max_incomplete_event_size`` (it reaches every worker process with uvicorn's config; ``rag serve``
sets it from ``RAG_SERVE_MAX_HEAD_BYTES``).

Body bytes are not counted here (the app caps bodies per route, :mod:`api.middleware`). Bytes that follow a
finished request in the same read (a pipelined next request) are fed without counting: at most one read
(≤ 256 KiB, asyncio's read size) beyond the cap is ever parsed, never an unbounded amount.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from api.errors import ErrorBody, ErrorDetail, FieldError


class HeadCappedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_head_bytes: int = config.h11_max_incomplete_event_size or 16 * 1024
        self.head_bytes = 0  # bytes of the current request's head received so far
        self.in_head = True  # between requests, or within a head: what arrives is head

    def data_received(self, data: bytes) -> None:
        if not self.in_head:
            super().data_received(data)
            return
        room = self.max_head_bytes - self.head_bytes
        if len(data) <= room:
            self.head_bytes += len(data)
            super().data_received(data)
            return
        # feed what fits: if the head ends within it, the rest is this request's body (or the next request)
        self.head_bytes = self.max_head_bytes
        if room > 0:
            super().data_received(data[:room])
        if self.transport.is_closing():
            return  # the parser refused the request already (400)
        if self.in_head:
            self._refuse_head()
            return
        super().data_received(data[room:])

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self.in_head = True  # what follows is the next request's head
        super().on_message_complete()

    def _refuse_head(self) -> None:
        """431 in the API's error shape (no request id: the request never reached the app), then close."""
        self.logger.warning("request head over %d bytes: 431, connection closed", self.max_head_bytes)
        message = f"request line + headers are over the limit of {self.max_head_bytes} bytes"
        field = FieldError(field="headers", message=message, limit=self.max_head_bytes)
        detail = ErrorDetail(code="headers_too_large", message=message, fields=[field])
        body = ErrorBody(error=detail).model_dump_json().encode()
        content = [b"HTTP/1.1 431 Request Header Fields Too Large\r\n"]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend(
            [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
                b"connection: close\r\n",
                b"\r\n",
                body,
            ]
        )
        self.transport.write(b"".join(content))
        self.transport.close()
