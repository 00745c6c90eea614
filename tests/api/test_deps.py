"""Every dependency and endpoint of the API runs on the event loop: FastAPI runs a plain ``def`` one in its
thread pool, a thread hand-off (and a wake-up of the loop) per dependency per request. On an L1 cache hit
those hand-offs cost more than the lookup itself (issue 14's profile of `rag serve` under wrk: anyio worker
threads 17% of the server's samples)."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from api.app import create_app
from tests.api.conftest import service_settings


def runs_on_the_loop(call: Callable[..., Any]) -> bool:
    """What FastAPI awaits directly: a coroutine function, or an object whose ``__call__`` is one."""
    dunder_call = type(call).__call__  # an instance's call (HTTPBearer), a function's own for functions
    return inspect.iscoroutinefunction(call) or inspect.iscoroutinefunction(dunder_call)


def calls(dependant: Dependant, path: str) -> Iterator[tuple[str, Callable[..., Any]]]:
    if dependant.call is not None:
        yield path, dependant.call
    for sub in dependant.dependencies:
        yield from calls(sub, path)


def api_routes(routes: list[Any]) -> Iterator[APIRoute]:
    """Every APIRoute, through included routers (FastAPI keeps them as their own route objects)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def test_no_route_hands_a_request_to_a_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    routes = list(api_routes(app.routes))
    assert any(r.path == "/query" for r in routes)
    in_threads = [
        f"{path}: {getattr(call, '__qualname__', call)}"
        for route in routes
        for path, call in calls(route.dependant, route.path)
        if not runs_on_the_loop(call)
    ]
    assert not in_threads, in_threads
