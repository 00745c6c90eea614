"""The locustfile, headless for a few seconds against a live server: it passes loose thresholds, and an
impossible p95 threshold makes locust exit non-zero (the thresholds can fail a CI job).

locust runs as a subprocess: it monkey-patches the standard library with gevent on import, which must not
happen inside the test process. Missing locust skips here and fails under CI=true.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from benchmarks.load.queries import beir_queries, demo_queries, paraphrase
from rag.testing.servers import in_ci
from tests.api.conftest import ACME_DOCS, ACME_KEY, live_server, service_settings

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "benchmarks" / "load" / "locustfile.py"


def require_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        message = "locust is not installed (pip install -e '.[dev]')"
        if in_ci():
            pytest.fail(f"{message}; CI runs the load test")
        pytest.skip(message)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    app = create_app(service_settings(tmp_path, monkeypatch))
    with live_server(app, {"acme": ACME_DOCS}) as url:
        yield url


def run_locust(url: str, tmp_path: Path, **env: str) -> tuple[int, str, dict[str, Any]]:
    """locust's exit code, its output (stdout and stderr) and the locustfile's LOAD_REPORT."""
    report = tmp_path / f"report-{len(list(tmp_path.glob('report-*')))}.json"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("LOAD_")}
    environ |= {"LOAD_API_KEY": ACME_KEY, "LOAD_WAIT_S": "0.05,0.2", "LOAD_REPORT": str(report), **env}
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    command += ["-u", "5", "-r", "5", "-t", "4s", "--host", url, "--only-summary", "--stop-timeout", "2"]
    done = subprocess.run(command, env=environ, capture_output=True, text=True, timeout=90, cwd=REPO)
    output = done.stdout + done.stderr
    assert report.is_file(), output[-3000:]
    return done.returncode, output, json.loads(report.read_text())


@pytest.mark.integration
def test_headless_run_passes_loose_thresholds_and_fails_an_impossible_one(
    server: str, tmp_path: Path
) -> None:
    require_locust()
    loose = {"LOAD_MAX_FAIL_RATIO": "0.01", "LOAD_MAX_P95_MS": "5000", "LOAD_TOP_K": "3"}
    code, output, report = run_locust(server, tmp_path, **loose)
    assert code == 0, output[-3000:]
    assert report["passed"] and report["requests"] > 10 and report["failures"] == 0
    assert "load test passed" in output
    kinds = report["cache_by_kind"]
    assert {"popular", "novel"} <= set(kinds), kinds
    assert kinds["popular"].get("l1", 0) > 0, "repeated popular queries are L1 cache hits"
    assert "/query/stream" in output and "/query [paraphrase]" in output

    code, output, report = run_locust(server, tmp_path, LOAD_MAX_P95_MS="0.001")
    assert code != 0
    assert not report["passed"] and any("LOAD_MAX_P95_MS" in r for r in report["reasons"])
    assert "FAILED its thresholds" in output


@pytest.mark.integration
def test_max_requests_stops_the_run_early(server: str, tmp_path: Path) -> None:
    require_locust()
    code, output, report = run_locust(server, tmp_path, LOAD_MAX_REQUESTS="15", LOAD_MAX_P95_MS="5000")
    assert code == 0, output[-3000:]
    assert "LOAD_MAX_REQUESTS=15" in output
    assert 15 <= report["requests"] < 40  # stopped at 15 queries (+ in-flight and feedback), not after 4 s


def test_demo_query_set_is_well_formed() -> None:
    queries = demo_queries()
    assert len(queries.popular) == len(queries.paraphrases) >= 10 and len(queries.novel) >= 20
    assert not set(queries.popular) & set(queries.novel)
    weights = queries.popularity()
    assert weights == sorted(weights, reverse=True)


def test_beir_paraphrases_only_add_words(tmp_path: Path) -> None:
    lines = [
        json.dumps({"_id": str(i), "text": f"Claim number {i} about protein folding."}) for i in range(40)
    ]
    (tmp_path / "queries.jsonl").write_text("\n".join(lines) + "\n")
    queries = beir_queries(tmp_path, popular=5)
    assert len(queries.popular) == 5 and len(queries.novel) == 35
    for original, variants in zip(queries.popular, queries.paraphrases, strict=True):
        words = set(original.lower().rstrip(".").split())
        for variant in variants:
            assert words <= set(variant.lower().replace(":", " ").split()), variant
    assert paraphrase("Cats purr.")[0] == "is it true that cats purr"
    with pytest.raises(ValueError, match="need more than popular"):
        beir_queries(tmp_path, popular=40)
