"""Real servers for tests, started on loopback in a temp folder: ``redis-server`` (Debian's package).

A missing program is a skip on a developer machine and a failure under ``CI=true`` (CI installs it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


class ProgramMissing(RuntimeError):
    pass


def require_program(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ProgramMissing(f"{name} is not installed (Debian package {package!r}; .ci/run installs it)")
    return path


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout_s} s")


@dataclass
class RedisServer:
    """A throwaway ``redis-server`` process that tests can kill, pause (SIGSTOP) and bring back."""

    port: int
    process: subprocess.Popen[bytes]
    binary: str
    folder: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port (empty: no persistence)."""
        if self.process.poll() is None:
            self.kill()
        self.process = _spawn_redis(self.binary, self.port, self.folder)
        wait_for_port(self.port)

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)


def _spawn_redis(binary: str, port: int, folder: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(folder),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextmanager
def redis_server(folder: Path) -> Iterator[RedisServer]:
    """A throwaway ``redis-server`` (no persistence) on a free loopback port."""
    binary = require_program("redis-server", "redis-server")
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    server = RedisServer(port, _spawn_redis(binary, port, folder), binary, folder)
    try:
        wait_for_port(port)
        yield server
    finally:
        server.resume()  # a paused server ignores SIGKILL until continued on some systems
        if server.process.poll() is None:
            server.kill()
