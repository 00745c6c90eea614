"""``rag serve`` hands uvicorn its connection limits; ``rag keys new`` prints the line the key ring reads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr

from api import workers
from api.http_protocol import HeadCappedHttpToolsProtocol
from rag.cli import main
from rag.service.auth import KeyRing, Principal, Scope
from rag.testing.servers import free_port


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("RAG_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("RAG_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("RAG_EMBEDDER_MODEL", "hash:64")


def captured_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append({"app": app, **kwargs}))
    return calls


def test_serve_passes_safe_connection_limits_to_uvicorn(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = captured_run(monkeypatch)
    assert main(["serve", "--port", "8123"]) == 0
    (call,) = calls
    assert call["port"] == 8123
    assert call["limit_concurrency"] == 1024
    assert call["timeout_keep_alive"] == 5
    assert call["h11_max_incomplete_event_size"] == 16 * 1024  # the head cap our protocol enforces
    assert call["http"] is HeadCappedHttpToolsProtocol  # never a parser without the cap


def test_serve_limits_come_from_settings_and_flags(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_SERVE_LIMIT_CONCURRENCY", "64")
    monkeypatch.setenv("RAG_SERVE_MAX_HEAD_BYTES", "8192")
    calls = captured_run(monkeypatch)
    assert main(["serve", "--timeout-keep-alive", "2", "--limit-concurrency", "32"]) == 0
    (call,) = calls
    assert (call["limit_concurrency"], call["timeout_keep_alive"]) == (32, 2)  # a flag beats the env
    assert call["h11_max_incomplete_event_size"] == 8192


def test_serve_workers_get_the_same_limits(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/tmp")
    calls: list[tuple[Any, ...]] = []
    monkeypatch.setattr(workers, "serve_workers", lambda *args: calls.append(args) or 0)
    assert main(["serve", "--workers", "2", "--port", "8124", "--max-head-bytes", "4096"]) == 0
    ((host, port, count, options),) = calls
    assert (host, port, count) == ("127.0.0.1", 8124, 2)
    assert (options["limit_concurrency"], options["h11_max_incomplete_event_size"]) == (1024, 4096)
    assert options["http"] is HeadCappedHttpToolsProtocol


def test_serve_workers_refuse_local_mode(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_VECTOR_ENGINE", "local")
    assert main(["serve", "--workers", "2"]) == 2


def test_each_worker_binds_its_own_socket_on_the_shared_port() -> None:
    port = free_port()
    first = workers.listening_socket("127.0.0.1", port)
    second = workers.listening_socket("127.0.0.1", port)  # SO_REUSEPORT: both bound, the kernel balances
    try:
        assert first.getsockname() == second.getsockname() == ("127.0.0.1", port)
    finally:
        first.close()
        second.close()


@pytest.mark.parametrize("pepper", [None, "pepper-0123456789-0123456789-0123456789"])
def test_keys_new_prints_the_line_the_key_ring_accepts(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    pepper: str | None,
) -> None:
    if pepper:
        monkeypatch.setenv("RAG_KEY_PEPPER", pepper)
    assert main(["keys", "new", "acme"]) == 0
    out = capsys.readouterr().out
    key = out.split("it is not stored):")[1].split()[0]
    line = next(w for w in out.split() if w.startswith("acme:"))
    assert line.startswith("acme:hmac-sha256:" if pepper else "acme:sha256:")
    keys_file = tmp_path / "keys"
    keys_file.write_text(line + "\n")
    ring = KeyRing.from_settings(None, keys_file, None, pepper=SecretStr(pepper) if pepper else None)
    assert ring.resolve(key) == Principal(Scope.TENANT, "acme")


def test_stats_sends_the_metrics_token_when_one_is_set(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    seen: list[dict[str, str]] = []

    def fake_get(url: str, **kwargs: Any) -> httpx.Response:
        seen.append(dict(kwargs.get("headers") or {}))
        return httpx.Response(200, text="", request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    assert main(["stats", "http://svc:8000"]) == 0
    monkeypatch.setenv("RAG_METRICS_TOKEN", "metrics-token-0123456789")
    assert main(["stats", "http://svc:8000"]) == 0
    assert "authorization" not in {k.lower() for k in seen[0]}
    assert seen[1] == {"Authorization": "Bearer metrics-token-0123456789"}


def test_reembed_stages_promotes_and_discards_a_candidate(
    clean_env: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    from rag.candidates import staged_version
    from rag.config import load_settings
    from rag.index.snapshot import IndexSnapshot
    from rag.index.versions import VersionStore

    corpus = tmp_path / "docs.jsonl"
    corpus.write_text(
        "\n".join(
            json.dumps({"_id": f"d{i}", "title": f"T{i}", "text": f"doc {i} on topic{i % 3}"})
            for i in range(8)
        )
    )
    assert main(["ingest", str(corpus), "--quiet"]) == 0
    settings = load_settings()
    capsys.readouterr()
    with pytest.raises(SystemExit, match="give --model"):
        main(["reembed"])

    assert main(["reembed", "--model", "hash:64#b", "--stage", "--quiet"]) == 0
    staged = json.loads(capsys.readouterr().out)
    assert staged["embedded"] == 8 and staged_version(settings) == staged["version"]
    assert main(["reembed", "--discard"]) == 0
    assert staged_version(settings) is None and json.loads(capsys.readouterr().out)["removed"]

    assert main(["reembed", "--model", "hash:64#b", "--stage", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["reembed", "--promote", "--quiet"]) == 0
    promoted = json.loads(capsys.readouterr().out)
    assert (promoted["embedded"], promoted["reused"], promoted["embedder"]) == (0, 8, "hash:64#b")
    snapshot = IndexSnapshot.load(VersionStore(settings.versions_dir))
    assert snapshot is not None and snapshot.manifest["embedder"] == "hash:64#b"
    assert staged_version(settings) is None
    assert main(["reembed", "--promote"]) == 2
    assert "no staged candidate" in capsys.readouterr().err
    assert main(["reembed", "--model", "hash:64#b"]) == 2
    assert "already" in capsys.readouterr().err
