"""Dependencies that tests can break on demand: a vector store that becomes unreachable, a reranker
that hangs, and an OpenAI-compatible chat server that can be made slow or failing (a real HTTP server
on loopback)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from rag.rerank.cross_encoder import Pair
from rag.testing.fakes import OverlapReranker
from rag.testing.servers import free_port, wait_for_port


class UnreachableStore:
    """Wraps a store; while ``down``, searches fail the way an unreachable server does: after a
    connect timeout, with ``ConnectionError``."""

    def __init__(self, store: Any, *, connect_timeout_s: float = 0.05) -> None:
        self._store = store
        self.down = False
        self.connect_timeout_s = connect_timeout_s

    def search(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_while_down()
        return self._store.search(*args, **kwargs)

    def search_sparse(self, *args: Any, **kwargs: Any) -> Any:
        self._fail_while_down()
        return self._store.search_sparse(*args, **kwargs)

    def _fail_while_down(self) -> None:
        if self.down:
            time.sleep(self.connect_timeout_s)
            raise ConnectionError("vector store unreachable (connection refused)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class HangingReranker(OverlapReranker):
    """An :class:`OverlapReranker` that, while ``hang`` is set, blocks each call for up to ``hang_s``."""

    def __init__(self, *, hang_s: float = 5.0) -> None:
        super().__init__()
        self.hanging = threading.Event()
        self._released = threading.Event()
        self.hang_s = hang_s

    def hang(self) -> None:
        self._released.clear()
        self.hanging.set()

    def recover(self) -> None:
        self.hanging.clear()
        self._released.set()

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        if self.hanging.is_set():
            self._released.wait(self.hang_s)
        return super().score_pairs(pairs)


class ChatServer:
    """A minimal OpenAI-compatible ``/v1/chat/completions``; ``mode`` is ``ok``, ``slow`` or ``fail``."""

    def __init__(self, *, slow_s: float = 5.0) -> None:
        self.mode = "ok"
        self.slow_s = slow_s
        self.requests = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])
        self._server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )

    async def _complete(self, request: Request) -> JSONResponse:
        import asyncio

        body = await request.json()
        self.requests += 1
        if self.mode == "fail":
            return JSONResponse({"error": {"message": "overloaded"}}, status_code=500)
        if self.mode == "slow":
            await asyncio.sleep(self.slow_s)
        question = body["messages"][-1]["content"].rsplit("Question: ", 1)[-1]
        return JSONResponse(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "model": body.get("model", "test"),
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": f"About {question} [1]"}}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
        )

    @contextmanager
    def running(self) -> Iterator[ChatServer]:
        thread = threading.Thread(target=self._server.run, daemon=True)
        thread.start()
        wait_for_port(self.port)
        try:
            yield self
        finally:
            self._server.should_exit = True
            thread.join(timeout=10)
