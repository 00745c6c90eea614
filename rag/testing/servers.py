"""Real servers for tests, started on loopback in a temp folder: ``redis-server``, ``prometheus`` and
``prometheus-alertmanager`` (Debian's packages), and a webhook receiver for Alertmanager.

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


# -- monitoring: Prometheus, Alertmanager and a webhook receiver --------------------------------------
@dataclass
class MonitoringProcess:
    """A started ``prometheus`` or ``prometheus-alertmanager`` (Debian's packages) on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


@contextmanager
def prometheus_server(folder: Path, config_yaml: str) -> Iterator[MonitoringProcess]:
    """Prometheus with ``config_yaml`` (rule files relative to ``folder`` or absolute), fresh storage."""
    port = free_port()
    with _monitoring_process(
        require_program("prometheus", "prometheus"),
        folder,
        "prometheus",
        config_yaml,
        port,
        [
            f"--storage.tsdb.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",
        ],
    ) as server:
        yield server


@contextmanager
def alertmanager_server(folder: Path, config_yaml: str) -> Iterator[MonitoringProcess]:
    """Alertmanager with ``config_yaml``, fresh storage, its cluster port on loopback too."""
    port, cluster_port = free_port(), free_port()
    with _monitoring_process(
        require_program("prometheus-alertmanager", "prometheus-alertmanager"),
        folder,
        "alertmanager",
        config_yaml,
        port,
        [
            f"--storage.path={folder / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--cluster.listen-address=127.0.0.1:{cluster_port}",
        ],
    ) as server:
        yield server


@contextmanager
def _monitoring_process(
    binary: str, folder: Path, name: str, config_yaml: str, port: int, args: list[str]
) -> Iterator[MonitoringProcess]:
    """``binary --config.file=<folder>/<name>.yml ARGS``, logging to ``<name>.log``; stopped on exit."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / f"{name}.yml"
    config.write_text(config_yaml)
    log = folder / f"{name}.log"
    process = subprocess.Popen(
        [binary, f"--config.file={config}", *args], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    server = MonitoringProcess(port, process, log)
    try:
        wait_for_port(port, timeout_s=30)
        yield server
    finally:
        server.stop()


class WebhookReceiver:
    """An HTTP server in a thread that keeps every JSON body POSTed to it (Alertmanager's webhooks)."""

    def __init__(self) -> None:
        import json
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        received: list[dict[str, object]] = []
        self.received = received
        self._lock = threading.Lock()
        lock = self._lock

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with lock:
                    received.append({"path": self.path, **json.loads(body or b"{}")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alerts(self) -> list[dict[str, object]]:
        """Every alert received so far, with the path it was posted to and the notification's status."""
        with self._lock:
            return [
                {**alert, "path": body["path"]}
                for body in self.received
                for alert in body.get("alerts", [])  # type: ignore[attr-defined]
            ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
