"""End to end with the real programs: the service under traffic, Prometheus scraping it with the generated
(fast) alert rules, Alertmanager routing to a webhook receiver run by the test. A fault is injected (the
reranker fails on every call): the breaker opens, the alert reaches the receiver through Alertmanager's
route; and every dashboard panel's query returns data from the live Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from api.app import create_app
from monitoring import stack as stack_files
from monitoring.config import CONFIG
from monitoring.dashboard import panel_queries
from rag.testing.faults import ChatServer
from rag.testing.servers import (
    MonitoringProcess,
    ProgramMissing,
    WebhookReceiver,
    alertmanager_server,
    in_ci,
    prometheus_server,
)
from tests.api.conftest import ACME, ACME_DOCS, live_server, service_settings

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
FAST_RULES = REPO / "monitoring" / "prometheus" / "rules.fast.yml"
ROLLOUT = """
[profiles.balanced]
max_rerank_depth = 0       # balanced answers skip the reranker (ok, cached, shadowed); latency ones use it
[[flags]]
name = "adaptive_rerank"   # the candidate path every request takes; trips when the reranker fails
enabled = true
rollout_percent = 100
[[flags]]
name = "multi_query"       # off for users; shadowed
enabled = false
[shadow]
rate = 1.0
candidate = "multi_query"
[fallback]
min_samples = 3
error_rate = 0.2
"""
QUERIES = [
    "who hunts mice at night",
    "which animal purrs",
    "what hunts mice? which animal purrs?",  # several questions: the shadow's multi-query plan differs
    "birds of prey",
    "who hunts mice at night",  # repeats: cache hits
    "which animal purrs",
]


class FailingReranker:
    """The injected fault: every cross-encoder call fails."""

    name = "failing"
    first_stage_weight = 0.0

    def warm_up(self) -> None:
        pass

    def score_pairs(self, pairs: Any) -> np.ndarray:
        raise RuntimeError("reranker model crashed (injected)")


@pytest.fixture
def programs() -> None:
    """Prometheus and Alertmanager must be installed: a skip locally, a failure under CI."""
    import shutil

    missing = [p for p in ("prometheus", "prometheus-alertmanager") if shutil.which(p) is None]
    if missing:
        if in_ci():
            pytest.fail(f"{missing} not installed (Debian packages prometheus, prometheus-alertmanager)")
        pytest.skip(f"{missing} not installed")


def prometheus_config(rag_url: str, alertmanager: str) -> str:
    """The generator's Prometheus config, scraping the test's service every second with the fast rules."""
    return str(
        yaml.safe_dump(
            stack_files.prometheus_config(
                CONFIG,
                targets=[rag_url.removeprefix("http://")],
                rule_files=[str(FAST_RULES)],
                scrape_interval="1s",
                evaluation_interval="1s",
                alertmanagers=[alertmanager],
                self_target=None,
            )
        )
    )


def alertmanager_config(receiver: WebhookReceiver) -> str:
    """The generator's routing tree (the committed alertmanager.yml), its webhooks pointed at the test's
    receiver and its waits short."""
    return str(
        yaml.safe_dump(
            stack_files.alertmanager_config(
                CONFIG,
                pager_url=f"{receiver.url}/pager",
                chat_url=f"{receiver.url}/chat",
                group_wait="1s",
                group_interval="1s",
                repeat_interval="1m",
            )
        )
    )


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, programs: None) -> Iterator[dict[str, Any]]:
    (tmp_path / "rollout.toml").write_text(ROLLOUT)
    chat = ChatServer()  # a real OpenAI-compatible endpoint: answer synthesis has traffic too
    settings = service_settings(
        tmp_path,
        monkeypatch,
        rollout_config=tmp_path / "rollout.toml",
        breaker_open_s=600.0,
        deadline_ms=2000,
        llm_url=chat.url,
    )
    app = create_app(settings, reranker=FailingReranker())
    receiver = WebhookReceiver()
    try:
        with (
            chat.running(),
            live_server(app, {"acme": ACME_DOCS}) as rag_url,
            alertmanager_server(tmp_path / "am", alertmanager_config(receiver)) as am,
            prometheus_server(tmp_path / "prom", prometheus_config(rag_url, f"127.0.0.1:{am.port}")) as prom,
        ):
            yield {"rag": rag_url, "prometheus": prom, "alertmanager": am, "receiver": receiver}
    except ProgramMissing as exc:
        pytest.fail(str(exc)) if in_ci() else pytest.skip(str(exc))
    finally:
        receiver.close()


def drive_traffic(rag: str, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=rag, headers=ACME, timeout=10) as client:
        i = 0
        while time.monotonic() < deadline:
            profile = "latency" if i % 3 == 0 else "balanced"  # latency plans rerank: the fault shows
            body = {"query": QUERIES[i % len(QUERIES)], "top_k": 3, "profile": profile, "answer": i % 5 == 0}
            r = client.post("/query", json=body)
            assert r.status_code == 200, r.text
            if i % 4 == 0:
                client.post("/feedback", json={"request_id": r.json()["request_id"], "rating": 4})
            i += 1
            time.sleep(0.05)


def instant(prom: MonitoringProcess, query: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{prom.url}/api/v1/query", params={"query": query}, timeout=10)
    body = r.json()
    assert body["status"] == "success", (query, body)
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_fault_fires_an_alert_through_alertmanager_and_every_panel_has_data(stack: dict[str, Any]) -> None:
    prom, receiver = stack["prometheus"], stack["receiver"]
    drive_traffic(stack["rag"], 12.0)
    # the alert: the reranker's breaker opened on the failures and stays open
    deadline = time.monotonic() + 90
    fired: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not fired:
        fired = [
            a
            for a in receiver.alerts()
            if a["labels"]["alertname"] == "RagBreakerOpenTooLong" and a["status"] == "firing"  # type: ignore[index]
        ]
        time.sleep(0.5)
    assert fired, (
        f"no RagBreakerOpenTooLong at the receiver; got {receiver.alerts()}; prometheus alerts: "
        + str(httpx.get(f"{prom.url}/api/v1/alerts").json())
    )
    alert = fired[0]
    assert alert["labels"]["breaker"] == "reranker"  # type: ignore[index]
    assert alert["annotations"]["runbook_url"].endswith("#breaker-open")  # type: ignore[index]
    assert str(alert["path"]).endswith("chat") or "warning" in str(alert["path"])  # warning → chat receiver
    # every panel's query returns data from the live Prometheus
    empty = {}
    for panel, queries in panel_queries().items():
        for query in queries:
            if not instant(prom, query):
                empty[panel] = query
    assert not empty, f"panels without data: {empty}"
