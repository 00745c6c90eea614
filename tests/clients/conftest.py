"""Live ``rag serve`` processes for the client tests: the bundled demo corpus with the hash embedder
(fast, deterministic), one tenant key, and a rate limit per server as each test needs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from rag.testing.servers import free_port, wait_for_port

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "data" / "demo"
KEY = "acme-client-key-0123456789abcdef"
BETA_KEY = (
    "beta-client-key-0123456789abcdef"  # a second tenant (no documents): a rate-limit bucket of its own
)
ADMIN_TOKEN = "admin-client-token-0123456789abcdef"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def demo_queries() -> list[str]:
    lines = (DEMO / "queries.jsonl").read_text().splitlines()
    return [json.loads(line)["text"] for line in lines if line.strip()]


@dataclass
class LiveService:
    url: str
    process: subprocess.Popen[bytes]
    data_dir: Path

    def ingest(self, docs: list[dict[str, object]], tenant: str = "acme") -> None:
        """Documents upserted through the admin API (published before it returns, for a few)."""
        r = httpx.post(
            f"{self.url}/admin/tenants/{tenant}/documents", json={"upsert": docs}, headers=ADMIN, timeout=60
        )
        assert r.status_code == 200, r.text


def _env(data_dir: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_COLLECTION="clients",
        RAG_EMBEDDER_MODEL="hash:64",
        RAG_API_KEYS=f"acme:{KEY},beta:{BETA_KEY}",
        RAG_ADMIN_TOKEN=ADMIN_TOKEN,
        RAG_LOG_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
    )
    env.update({f"RAG_{k.upper()}": v for k, v in settings.items()})
    return env


def ingest_demo(data_dir: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(DEMO), "--tenant", "acme", "--quiet"],
        env=_env(data_dir),
        check=True,
        capture_output=True,
        cwd=REPO,
    )


@dataclass
class _Started:
    service: LiveService

    def stop(self) -> None:
        self.service.process.terminate()
        try:
            self.service.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.service.process.kill()
            self.service.process.wait()


def start_serve(data_dir: Path, *, wait_ready: bool = True, **settings: str) -> _Started:
    """``rag serve`` on a free loopback port, up (and ready, unless ``wait_ready`` is False)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rag", "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=_env(data_dir, **settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=REPO,
    )
    started = _Started(LiveService(f"http://127.0.0.1:{port}", process, data_dir))
    try:
        wait_for_port(port, timeout_s=90)
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "rag serve exited"
            assert time.monotonic() < deadline, "rag serve did not load in 90 s"
            status = httpx.get(f"{started.service.url}/ready", timeout=5).json()
            if status["ready"] or (not wait_ready and status["phase"] != "loading"):
                return started
            time.sleep(0.1)
    except BaseException:
        started.stop()
        raise


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir with the demo corpus published for tenant acme (ingested once; servers get copies:
    the embedded vector store locks its folder to one process)."""
    data_dir = tmp_path_factory.mktemp("demo-ingested") / "data"
    ingest_demo(data_dir)
    return data_dir


def copy_of(data_dir: Path, folder: Path) -> Path:
    return Path(shutil.copytree(data_dir, folder / "data"))


@pytest.fixture(scope="session")
def demo_service(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The demo corpus served for tenant acme, with a rate limit no test reaches."""
    data_dir = copy_of(demo_data, tmp_path_factory.mktemp("demo"))
    started = start_serve(data_dir, rate_limit_qps="1000", rate_limit_burst="1000")
    try:
        yield started.service
    finally:
        started.stop()


@pytest.fixture(scope="module")
def limited_service(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveService]:
    """The demo corpus served with a rate limit of 1 query/s, burst 1, per tenant: a second query at once
    is a 429 with ``Retry-After: 1``. Each test takes its own tenant's bucket (acme, beta)."""
    data_dir = copy_of(demo_data, tmp_path_factory.mktemp("limited"))
    started = start_serve(data_dir, rate_limit_qps="1", rate_limit_burst="1")
    try:
        yield started.service
    finally:
        started.stop()


@pytest.fixture
def empty_service(tmp_path: Path) -> Iterator[LiveService]:
    """A service with nothing published yet: ``/query`` is a 503 ``not_ready`` with ``Retry-After``."""
    started = start_serve(tmp_path / "data", wait_ready=False)
    try:
        yield started.service
    finally:
        started.stop()
