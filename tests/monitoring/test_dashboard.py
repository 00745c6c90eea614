"""The committed Grafana dashboard: variables, panels with targets, a layout that fits, real metrics."""

from __future__ import annotations

import json
from typing import Any

import pytest

from monitoring import panel_queries
from monitoring.config import CONFIG
from monitoring.promql import dashboard_queries
from tests.monitoring.conftest import MONITORING, exported_labels, unknown_references

DASHBOARD = MONITORING / "grafana" / "dashboards" / "rag-service.json"


@pytest.fixture(scope="module")
def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_dashboard_basics(board: dict[str, Any]) -> None:
    assert board["uid"] == "rag-service"
    assert 36 <= board["schemaVersion"] <= 41  # Grafana 10.x / 11.x
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    tenant = variables["tenant"]
    assert tenant["type"] == "query"
    assert tenant["definition"] == 'label_values(rag_queries_total{job="rag"}, tenant)'
    assert tenant["includeAll"] and tenant["allValue"] == ".*"


def test_every_panel_has_targets_on_the_datasource_variable(board: dict[str, Any]) -> None:
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels(board):
        assert panel["type"] in ("timeseries", "stat"), panel["title"]
        assert panel["targets"], f"{panel['title']}: no targets"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip(), panel["title"]
            assert target["datasource"]["uid"] == "${datasource}"


def test_panels_fit_the_grid_without_overlapping(board: dict[str, Any]) -> None:
    boxes: list[tuple[str, dict[str, int]]] = []
    for panel in board["panels"]:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, panel["title"]
        for other, o in boxes:
            overlap_x = g["x"] < o["x"] + o["w"] and o["x"] < g["x"] + g["w"]
            overlap_y = g["y"] < o["y"] + o["h"] and o["y"] < g["y"] + g["h"]
            assert not (overlap_x and overlap_y), f"{panel['title']} overlaps {other}"
        boxes.append((panel["title"], g))


REQUIRED = {
    "QPS": ["rag_queries_total", "by (route)"],
    "Latency p50/p95/p99": [
        "histogram_quantile(0.5,",
        "histogram_quantile(0.95,",
        "histogram_quantile(0.99,",
    ],
    "Error rate": ['rag_http_requests_total{job="rag",status=~"5.."}', 'status="error"'],
    "Cache hit rate": ['rag_cache_lookups_total{job="rag",result="hit"}'],
    "Latency by step": ["rag_step_duration_seconds_bucket", "by (step, le)"],
    "In-flight": ["rag_inflight_queries"],
    "Cost rate": ["rag_cost_total", "* 3600", "by (step)", "by (tenant)"],
    "CPU seconds per second by step": ["rag_cost_cpu_seconds_total"],
    "Route / complexity": ["rag_router_decisions_total", "by (arm)", "by (complexity)"],
    "Success rate": ['status=~"ok|degraded"'],
    "Breaker states": ["rag_breaker_state", "== 1", "by (breaker, state)"],
    "Degradations": ["rag_degradations_total", "by (step, reason)"],
    "Errors by component and type": ["rag_errors_total", "by (component, type)"],
    "Queries by cache result": ["by (cache)"],
    "Variant assignments": ["rag_rollout_assignments_total"],
    "Fallback tripped": ["rag_fallback_tripped"],
    "Shadow overlap@10 (mean)": ["rag_shadow_overlap_at_10_sum", "rag_shadow_overlap_at_10_count"],
    "Shadow judged quality (served vs candidate)": [
        "rag_shadow_judged_quality_total",
        "on (flag) group_left",
        "rag_shadow_judged_total",
    ],
    "Budget pressure": ["rag_budget_pressure"],
}


@pytest.mark.parametrize("title", sorted(REQUIRED))
def test_required_panels_query_what_they_say(board: dict[str, Any], title: str) -> None:
    by_title = {p["title"]: "\n".join(t["expr"] for t in p["targets"]) for p in panels(board)}
    assert title in by_title, f"missing panel {title!r}; panels: {sorted(by_title)}"
    for needle in REQUIRED[title]:
        assert needle in by_title[title], f"{title}: {needle!r} not in {by_title[title]!r}"


def test_tenant_metrics_follow_the_tenant_variable(board: dict[str, Any]) -> None:
    by_title = {p["title"]: "\n".join(t["expr"] for t in p["targets"]) for p in panels(board)}
    for title in ("QPS", "Cost rate", "Success rate", "Budget pressure", "Queries by cache result"):
        assert 'tenant=~"$tenant"' in by_title[title], title


def test_panel_queries_are_runnable_as_they_stand(board: dict[str, Any]) -> None:
    queries = panel_queries()
    assert list(queries) == [p["title"] for p in panels(board)]
    for title, exprs in queries.items():
        assert exprs, title
        for expr in exprs:
            assert "$" not in expr, (title, expr)
    assert 'tenant=~".*"' in queries["QPS"][0]
    assert "[1m]" in queries["QPS"][0]
    assert "[15s]" in panel_queries(rate_interval="15s")["QPS"][0]


def test_every_query_uses_exported_metrics_and_labels() -> None:
    exported = exported_labels()
    for name, query in dashboard_queries(CONFIG).items():
        assert not unknown_references(query.expr, exported), (name, query.expr)


def test_the_reference_check_catches_a_wrong_name() -> None:
    exported = exported_labels()
    assert unknown_references('sum by (route) (rate(rag_queries_total{job="rag"}[1m]))', exported) == []
    assert unknown_references('rate(rag_query_total{job="rag"}[1m])', exported) == ["metric rag_query_total"]
    assert unknown_references('sum by (arm) (rate(rag_queries_total{lvl="x"}[1m]))', exported) == [
        "label lvl on rag_queries_total",
        "grouping label arm on rag_queries_total",
    ]
