"""The server's HTTP protocol over real sockets: uvicorn's httptools parser with the request-head cap
(api/http_protocol.py). A head past the cap gets 431 and a closed connection, however it arrives; what
follows a head (its body, the next request on the connection) is not counted against it."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from fastapi import FastAPI, Request

from api.http_protocol import HeadCappedHttpToolsProtocol
from rag.testing.servers import free_port, wait_for_port

CAP = 4096


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    app = FastAPI()

    @app.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"body": len(await request.body())}

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http=HeadCappedHttpToolsProtocol,
        h11_max_incomplete_event_size=CAP,
        log_level="error",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port(port)
    yield port
    server.should_exit = True
    thread.join(timeout=10)


def request(padding: int, body: bytes = b"") -> bytes:
    return (
        b"POST /echo HTTP/1.1\r\nhost: t\r\ncontent-type: application/octet-stream\r\n"
        + b"x-pad: "
        + b"a" * padding
        + b"\r\ncontent-length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )


def exchange(port: int, *pieces: bytes, pause_s: float = 0.0) -> tuple[bytes, bool]:
    """Send ``pieces`` (one write each); returns what came back and whether the server cut us off
    before everything was sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        cut = False
        for piece in pieces:
            try:
                s.sendall(piece)
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            if pause_s:
                time.sleep(pause_s)
        if not cut:
            s.shutdown(socket.SHUT_WR)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except ConnectionResetError:
            pass
        return b"".join(chunks), cut


def statuses(reply: bytes) -> list[int]:
    return [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", reply)]


def test_a_head_within_the_cap_is_served_with_a_body_larger_than_the_cap(server: int) -> None:
    reply, _ = exchange(server, request(1000, body=b"x" * (CAP * 8)))  # head and body in one write
    assert statuses(reply) == [200] and b'{"body":32768}' in reply


def test_a_head_over_the_cap_gets_431_and_a_closed_connection(server: int) -> None:
    reply, _ = exchange(server, request(CAP))
    assert statuses(reply) == [431]
    error = json.loads(reply.split(b"\r\n\r\n", 1)[1])["error"]  # the API's error shape, naming the limit
    assert error["code"] == "headers_too_large"
    assert error["fields"] == [{"field": "headers", "message": error["message"], "limit": CAP}]


def test_a_header_that_never_ends_is_cut_off_near_the_cap(server: int) -> None:
    """1 MiB of one header value in 1 KiB writes: the server answers 431 and closes long before it is all
    sent (httptools would otherwise hold the growing value in memory)."""
    start = b"POST /echo HTTP/1.1\r\nhost: t\r\nx-pad: "
    reply, cut = exchange(server, start, *[b"a" * 1024] * 1024, pause_s=0.0005)
    assert statuses(reply) == [431]
    assert cut  # the connection was closed while we were still sending


def test_each_request_on_a_connection_has_its_own_cap(server: int) -> None:
    """Keep-alive: three heads of 3/4 of the cap each are fine (the count restarts per request); a fourth,
    over the cap, is refused on the same connection."""
    ok = request(CAP * 3 // 4, body=b"hello")
    reply, _ = exchange(server, ok, ok, ok, request(CAP + 10), pause_s=0.05)
    assert statuses(reply) == [200, 200, 200, 431]
