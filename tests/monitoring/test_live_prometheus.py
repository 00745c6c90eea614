"""A real Prometheus (Debian's) with ``rules.fast.yml``, scraping an exporter of the service's own metric
objects on a bad day (``bad_day_exporter.py``): every dashboard panel's query returns data, every rule
evaluates cleanly, every alert fires, and RagServiceDown fires once the exporter is gone."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import yaml

from monitoring import panel_queries, stack
from monitoring.config import CONFIG
from rag.testing.servers import free_port, prometheus_server, wait_for_port
from tests.monitoring.conftest import PROMETHEUS_DIR, REPO

pytestmark = pytest.mark.integration

HERE = Path(__file__).resolve().parent
T = TypeVar("T")


@dataclass
class Live:
    url: str
    exporter: subprocess.Popen[bytes]

    def get(self, path: str, **params: str) -> Any:
        response = httpx.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        body = response.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.get("/api/v1/query", query=expr)
        result: list[dict[str, Any]] = data["result"]
        return result

    def firing(self) -> set[tuple[str, str]]:
        alerts = self.get("/api/v1/alerts")["alerts"]
        return {(a["labels"]["alertname"], a["labels"]["severity"]) for a in alerts if a["state"] == "firing"}


def poll(check: Callable[[], T], done: Callable[[T], bool], timeout_s: float) -> T:
    """``check()`` until ``done`` says so or the time is up; returns the last value either way."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.5)


@pytest.fixture(scope="module")
def live(prometheus_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """Prometheus (``prometheus_bin`` is the gate: a skip locally, a failure under CI when it is missing)
    scraping the bad-day exporter with the fast rules."""
    folder = tmp_path_factory.mktemp("prometheus")
    exporter_port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["PYTHONPATH"] = str(REPO)
    exporter = subprocess.Popen(
        [sys.executable, str(HERE / "bad_day_exporter.py"), str(exporter_port), str(2 * CONFIG.inflight_max)],
        cwd=REPO,
        env=env,
    )
    config = stack.prometheus_config(
        CONFIG,
        targets=[f"127.0.0.1:{exporter_port}"],
        rule_files=[str(PROMETHEUS_DIR / "rules.fast.yml")],
        scrape_interval="1s",
        evaluation_interval="1s",
        alertmanagers=[],
        self_target=None,
    )
    try:
        with prometheus_server(folder, yaml.safe_dump(config)) as prometheus:
            wait_for_port(exporter_port, timeout_s=30)
            yield Live(prometheus.url, exporter)
    finally:
        exporter.terminate()
        try:
            exporter.wait(timeout=10)
        except subprocess.TimeoutExpired:
            exporter.kill()
            exporter.wait(timeout=10)


def test_every_panel_has_data_and_every_rule_evaluates(live: Live) -> None:
    queries = panel_queries(rate_interval="1m")

    def empty() -> list[str]:
        return [
            f"{title}: {expr}" for title, exprs in queries.items() for expr in exprs if not live.query(expr)
        ]

    missing = poll(empty, lambda left: not left, timeout_s=60)
    assert not missing, "panels without data:\n" + "\n".join(missing)

    def rules() -> list[dict[str, Any]]:
        return [r for g in live.get("/api/v1/rules")["groups"] for r in g["rules"]]

    evaluated = poll(
        rules, lambda rs: bool(rs) and all(r.get("lastEvaluation", "0001")[:4] != "0001" for r in rs), 30
    )
    unhealthy = [(r["name"], r.get("lastError")) for r in evaluated if r["health"] != "ok"]
    assert not unhealthy


def test_fast_rules_fire_live_and_service_down_after_the_exporter_stops(live: Live) -> None:
    expected = {
        ("RagHighLatencyP99", "warning"),
        ("RagErrorBudgetBurn", "critical"),
        ("RagErrorBudgetBurn", "warning"),
        ("RagLowCacheHitRate", "warning"),
        ("RagHighCostRate", "warning"),
        ("RagHighConcurrency", "warning"),
        ("RagBreakerOpenTooLong", "warning"),
    }
    firing = poll(live.firing, lambda f: expected <= f, timeout_s=90)
    assert expected <= firing, f"not firing: {sorted(expected - firing)}"
    assert ("RagServiceDown", "critical") not in firing

    live.exporter.terminate()
    live.exporter.wait(timeout=10)
    firing = poll(live.firing, lambda f: ("RagServiceDown", "critical") in f, timeout_s=60)
    assert ("RagServiceDown", "critical") in firing
