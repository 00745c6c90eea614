"""``rag serve --workers N``: N server processes, each with its own listening socket on the same port.

uvicorn's own multi-worker mode binds one socket in the supervisor and lets every worker accept from it;
asyncio accepts every pending connection in one go, so the first worker to wake takes a whole burst of
keep-alive connections and keeps them — measured under wrk (64 connections, 2 workers): one worker served
all of them, the other sat idle, and throughput fell below one process's (``benchmarks/results/
workers.md``). Here each worker binds its own socket with ``SO_REUSEPORT``, so the kernel spreads new
connections across the workers by their address hash.

The supervisor starts the workers (spawned, so nothing of this process is inherited but the environment),
restarts one that dies, and on SIGINT/SIGTERM stops them all (each finishes its requests: uvicorn's
graceful shutdown) before it returns.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger(__name__)

APP = "api.app:create_served_app"
BACKLOG = 2048  # uvicorn's default
STOP_WAIT_S = 30.0  # a worker still running this long after SIGTERM is killed
RESTART_PAUSE_S = 1.0  # between noticing a dead worker and starting its replacement


def serve_workers(host: str, port: int, workers: int, server_options: dict[str, Any]) -> int:
    """Run ``workers`` processes serving :data:`APP` on ``host:port`` until SIGINT/SIGTERM; returns 0."""
    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    running: dict[int, BaseProcess] = {}

    def start(slot: int) -> None:
        process = context.Process(
            target=run_worker, args=(host, port, server_options), name=f"rag-worker-{slot}", daemon=False
        )
        process.start()
        running[slot] = process

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for slot in range(workers):
            start(slot)
        while not stop.wait(RESTART_PAUSE_S):
            for slot, process in list(running.items()):
                if not process.is_alive():
                    log.warning("worker %s exited with %s; starting another", process.name, process.exitcode)
                    start(slot)
    finally:
        for process in running.values():
            if process.is_alive() and process.pid is not None:
                process.terminate()
        for process in running.values():
            process.join(STOP_WAIT_S)
            if process.is_alive():
                process.kill()
                process.join()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``: one per worker, the kernel balances them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(BACKLOG)
    sock.set_inheritable(True)
    return sock


def run_worker(host: str, port: int, server_options: dict[str, Any]) -> None:
    """One worker: its own socket, the app built from the environment (:func:`api.app.create_served_app`)."""
    import uvicorn

    sock = listening_socket(host, port)
    config = uvicorn.Config(APP, factory=True, log_config=None, access_log=False, **server_options)
    uvicorn.Server(config).run(sockets=[sock])
