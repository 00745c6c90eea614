"""The Grafana dashboard: the layout (rows of panels naming their queries) and the JSON it becomes.

The PromQL is not here: panels name expressions of :func:`monitoring.promql.dashboard_queries`. Every
panel goes through one default builder (:func:`_base`); :func:`timeseries` and :func:`stat` add what is
theirs (grafana-foundation-sdk's shape, without the dependency).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from monitoring.config import MonitoringConfig
from monitoring.promql import Query, dashboard_queries

UID = "rag-service"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
GRID_WIDTH = 24

Steps = tuple[tuple[float | None, str], ...]  # (from value, colour); the first starts at None


@dataclass(frozen=True)
class Panel:
    title: str
    queries: tuple[str, ...]
    kind: str = "timeseries"  # or "stat"
    unit: str = "short"
    w: int = 12
    h: int = 8
    description: str = ""
    steps: Steps = ((None, "green"),)
    threshold_line: bool = False  # timeseries: draw the steps as lines (an SLO target, a limit)
    stack: bool = False
    name_only: bool = False  # stat: show series names (breaker states), coloured by state


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


def layout(cfg: MonitoringConfig) -> tuple[Row, ...]:
    slo, budget = cfg.latency_p99_s, cfg.error_budget
    # the burn-rate stat turns orange at the ticket's factor, red at the page's
    factors = sorted({b.factor for b in cfg.profile("default").burn_windows})
    burn_steps: Steps = ((None, "green"), *zip(factors, ("orange", "red"), strict=False))
    return (
        Row(
            "Overview",
            (
                Panel("Queries/s", ("qps_total",), "stat", "reqps", w=3, h=4),
                Panel(
                    "Success",
                    ("success_ratio",),
                    "stat",
                    "percentunit",
                    w=3,
                    h=4,
                    description="ok + degraded over all queries",
                    steps=((None, "red"), (cfg.availability, "green")),
                ),
                Panel(
                    "p99 latency",
                    ("latency_p99",),
                    "stat",
                    "s",
                    w=3,
                    h=4,
                    steps=((None, "green"), (slo, "red")),
                ),
                Panel(
                    "Error budget burn (1h)",
                    ("error_budget_burn_1h",),
                    "stat",
                    "x",
                    w=3,
                    h=4,
                    description=f"1h error ratio / the {budget} error budget (1: it lasts 30 days)",
                    steps=burn_steps,
                ),
                Panel(
                    "Cache hits",
                    ("cache_hit_ratio",),
                    "stat",
                    "percentunit",
                    w=3,
                    h=4,
                    steps=((None, "orange"), (cfg.cache_hit_ratio_min, "green")),
                ),
                Panel(
                    "Spend/h",
                    ("cost_per_hour_total",),
                    "stat",
                    w=3,
                    h=4,
                    description="money per hour, the rollout config's currency",
                    steps=((None, "green"), (cfg.cost_per_hour_max, "red")),
                ),
                Panel(
                    "Queries in flight",
                    ("inflight_total",),
                    "stat",
                    w=3,
                    h=4,
                    steps=((None, "green"), (cfg.inflight_max, "red")),
                ),
                Panel(
                    "Instances up",
                    ("instances_up",),
                    "stat",
                    w=3,
                    h=4,
                    steps=((None, "red"), (1, "green")),
                ),
            ),
        ),
        Row(
            "Traffic",
            (
                Panel("QPS", ("qps_by_route",), unit="reqps", description="rag_queries_total by route"),
                Panel("HTTP requests by route", ("http_rps_by_route",), unit="reqps"),
                Panel("Queries by status", ("queries_by_status",), unit="reqps", stack=True),
                Panel("Rate-limited requests by tenant", ("rate_limited_by_tenant",), unit="reqps"),
            ),
        ),
        Row(
            "Latency",
            (
                Panel(
                    "Latency p50/p95/p99",
                    ("latency_p50", "latency_p95", "latency_p99"),
                    unit="s",
                    steps=((None, "green"), (slo, "red")),
                    threshold_line=True,
                    description=f"rag_query_duration_seconds; the line is the {slo} s p99 target",
                ),
                Panel("Latency p99 by route", ("latency_p99_by_route",), unit="s"),
                Panel(
                    "Latency by step", ("step_latency_p95",), unit="s", description="p95 per pipeline step"
                ),
                Panel("HTTP latency p99 by route", ("http_latency_p99_by_route",), unit="s"),
            ),
        ),
        Row(
            "Errors",
            (
                Panel(
                    "Error rate",
                    ("query_error_ratio", "http_5xx_ratio"),
                    unit="percentunit",
                    w=8,
                    steps=((None, "green"), (budget, "red")),
                    threshold_line=True,
                    description="status=error share of non-cancelled queries; 5xx share of HTTP requests",
                ),
                Panel(
                    "Success rate",
                    ("success_ratio",),
                    unit="percentunit",
                    w=8,
                    steps=((None, "red"), (cfg.availability, "green")),
                    threshold_line=True,
                ),
                Panel("Errors by component and type", ("errors_by_component",), unit="reqps", w=8),
                Panel(
                    "Degradations", ("degradations_by_step",), unit="reqps", description="by step and reason"
                ),
                Panel("LLM calls by status", ("llm_requests_by_status",), unit="reqps"),
            ),
        ),
        Row(
            "Overload",
            (
                Panel(
                    "Answers by outcome (goodput: ok)",
                    ("answers_by_outcome",),
                    unit="reqps",
                    w=8,
                    stack=True,
                    description="ok: full answers (goodput); degraded: a cheaper rung answered; error: "
                    "refused (503 once even BM25 could not answer in time)",
                ),
                Panel(
                    "Degraded share by rung",
                    ("degraded_share_by_rung",),
                    unit="percentunit",
                    w=8,
                    description="per step and reason, over all queries; embed: shed is admission control",
                ),
                Panel(
                    "Shed and refused",
                    ("shed_share", "refused_share"),
                    unit="percentunit",
                    w=8,
                    description="model steps shed per query (load, not failure); share of HTTP 503",
                ),
                Panel(
                    "Queue wait p95",
                    ("queue_wait_p95",),
                    unit="s",
                    description="embed/rerank: the model threads; cpu: the CPU pool (BM25, vector search). "
                    "Load: never counted by a breaker",
                ),
                Panel(
                    "Event loop lag",
                    ("loop_lag",),
                    unit="s",
                    description="how late a finished step's request moves on; admission adds it to every "
                    "optional step's estimate",
                ),
            ),
        ),
        Row(
            "Replicas",
            (
                Panel(
                    "Index version per replica",
                    ("index_version",),
                    unit="none",
                    w=12,
                    description="the index version each process serves (v000007 → 7); every one follows "
                    "the published version within a poll (RAG_VERSION_POLL_MS)",
                ),
                Panel(
                    "Index switches",
                    ("index_switches",),
                    unit="none",
                    w=12,
                    description="versions switched to while serving (an ingest here, or another's followed)",
                ),
            ),
        ),
        Row(
            "Cache",
            (
                Panel(
                    "Cache hit rate",
                    ("cache_hit_ratio", "cache_hit_ratio_by_level", "cache_served_ratio"),
                    unit="percentunit",
                    w=8,
                    description="hits over lookups (any level: over l1 lookups); queries answered from cache",
                ),
                Panel("Queries by cache result", ("queries_by_cache",), unit="reqps", w=8, stack=True),
                Panel("Coalesced queries (single-flight)", ("cache_coalesced",), unit="reqps", w=8),
            ),
        ),
        Row(
            "Concurrency and breakers",
            (
                Panel(
                    "In-flight",
                    ("inflight_by_instance",),
                    w=8,
                    steps=((None, "green"), (cfg.inflight_max, "red")),
                    threshold_line=True,
                ),
                Panel(
                    "Breaker states",
                    ("breaker_states",),
                    "stat",
                    w=8,
                    name_only=True,
                    description="each breaker's current state (rag_breaker_state == 1)",
                ),
                Panel("Breaker transitions", ("breaker_transitions",), unit="reqps", w=8),
            ),
        ),
        Row(
            "Cost and routing",
            (
                Panel(
                    "Cost rate",
                    ("cost_per_hour_by_step", "cost_per_hour_by_tenant"),
                    description="money per hour (the rollout config's currency), by step and by tenant",
                ),
                Panel("CPU seconds per second by step", ("cpu_seconds_by_step",), stack=True),
                Panel("Mean cost per query by arm", ("query_cost_mean_by_arm",), w=8),
                Panel(
                    "Budget pressure",
                    ("budget_pressure",),
                    unit="percentunit",
                    w=8,
                    steps=((None, "green"), (1.0, "red")),
                    threshold_line=True,
                    description="per tenant: spend over the last hour / the tightest budget",
                ),
                Panel(
                    "Route / complexity",
                    ("router_by_arm", "router_by_complexity"),
                    unit="reqps",
                    w=8,
                    description="router decisions by arm (plan) and by query complexity",
                ),
            ),
        ),
        Row(
            "Rollout",
            (
                Panel("Variant assignments", ("rollout_assignments",), unit="reqps", w=6, stack=True),
                Panel("Fallback tripped", ("fallback_tripped",), w=6, description="1 while on the baseline"),
                Panel("Shadow overlap@10 (mean)", ("shadow_overlap_mean",), unit="percentunit", w=6),
                Panel("Shadow runs by status", ("shadow_runs_by_status",), unit="reqps", w=6),
                Panel(
                    "Shadow judged quality (served vs candidate)",
                    ("shadow_judged_quality",),
                    w=6,
                    description="mean feedback quality (nDCG@10 of graded relevance, else the clicks' "
                    "reciprocal rank) of the served and the candidate ranking of judged shadowed requests",
                ),
            ),
        ),
    )


# -- JSON --------------------------------------------------------------------------------------------------


def _thresholds(steps: Steps) -> dict[str, Any]:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


def _target(ref: str, q: Query) -> dict[str, Any]:
    return {"datasource": DATASOURCE, "expr": q.expr, "legendFormat": q.legend, "range": True, "refId": ref}


def _base(pid: int, p: Panel, grid: dict[str, int], queries: dict[str, Query]) -> dict[str, Any]:
    unknown = [name for name in p.queries if name not in queries]
    if unknown or not p.queries:
        raise ValueError(f"panel {p.title!r}: unknown queries {unknown}; known: {sorted(queries)}")
    return {
        "id": pid,
        "type": p.kind,
        "title": p.title,
        "description": p.description,
        "datasource": DATASOURCE,
        "gridPos": grid,
        "fieldConfig": {
            "defaults": {"unit": p.unit, "color": {"mode": "thresholds"}, "thresholds": _thresholds(p.steps)},
            "overrides": [],
        },
        "options": {},
        "targets": [_target(chr(ord("A") + k), queries[name]) for k, name in enumerate(p.queries)],
    }


def timeseries(panel: dict[str, Any], p: Panel) -> dict[str, Any]:
    defaults = panel["fieldConfig"]["defaults"]
    defaults["color"] = {"mode": "palette-classic"}
    defaults["custom"] = {
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 20 if p.stack else 0,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"group": "A", "mode": "normal" if p.stack else "none"},
        "thresholdsStyle": {"mode": "line" if p.threshold_line else "off"},
    }
    panel["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel


_STATE_COLOURS = (("open", "red"), ("half-open", "orange"), ("closed", "green"))


def stat(panel: dict[str, Any], p: Panel) -> dict[str, Any]:
    panel["options"] = {
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "colorMode": "background" if p.name_only else "value",
        "graphMode": "none" if p.name_only else "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "name" if p.name_only else "auto",
    }
    if p.name_only:
        panel["fieldConfig"]["overrides"] = [
            {
                "matcher": {"id": "byRegexp", "options": f".*: {state}$"},
                "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": colour}}],
            }
            for state, colour in _STATE_COLOURS
        ]
    return panel


_BUILDERS = {"timeseries": timeseries, "stat": stat}


def _panels(cfg: MonitoringConfig) -> list[dict[str, Any]]:
    queries = dashboard_queries(cfg)
    out: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in layout(cfg):
        out.append(
            {
                "id": pid,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": y},
                "panels": [],
            }
        )
        pid, y = pid + 1, y + 1
        x, row_h = 0, 0
        for p in row.panels:
            if p.kind not in _BUILDERS:
                raise ValueError(f"panel {p.title!r}: kind {p.kind!r}; choices: {sorted(_BUILDERS)}")
            if x + p.w > GRID_WIDTH:
                x, y, row_h = 0, y + row_h, 0
            grid = {"h": p.h, "w": p.w, "x": x, "y": y}
            out.append(_BUILDERS[p.kind](_base(pid, p, grid, queries), p))
            pid, x, row_h = pid + 1, x + p.w, max(row_h, p.h)
        y += row_h
    return out


def _templating(cfg: MonitoringConfig) -> list[dict[str, Any]]:
    tenants = f"label_values(rag_queries_total{{{cfg.selector}}}, tenant)"
    return [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        },
        {
            "name": "tenant",
            "label": "Tenant",
            "type": "query",
            "datasource": DATASOURCE,
            "definition": tenants,
            "query": {"query": tenants, "refId": "tenants"},
            "refresh": 2,
            "includeAll": True,
            "allValue": ".*",
            "multi": True,
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "options": [],
            "hide": 0,
            "regex": "",
            "sort": 1,
        },
    ]


def dashboard(cfg: MonitoringConfig) -> dict[str, Any]:
    panels = _panels(cfg)
    titles = [p["title"] for p in panels if p["type"] != "row"]
    duplicates = sorted({t for t in titles if titles.count(t) > 1})
    if duplicates:
        raise ValueError(f"panel titles must be unique: {duplicates}")
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": "RAG retrieval service: traffic, latency, errors, cache, cost, routing, rollout. "
        "Generated by monitoring/generate.py; edit monitoring/config.py, not this file.",
        "editable": True,
        "fiscalYearStartMonth": 0,
        "graphTooltip": 1,
        "id": None,
        "links": [
            {"title": "Runbook", "type": "link", "url": cfg.runbook_base, "icon": "doc", "targetBlank": True}
        ],
        "panels": panels,
        "refresh": "30s",
        "schemaVersion": 39,
        "tags": ["rag", "generated"],
        "templating": {"list": _templating(cfg)},
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "browser",
        "title": "RAG service",
        "uid": UID,
        "version": 1,
    }


def panel_queries(cfg: MonitoringConfig | None = None, rate_interval: str = "1m") -> dict[str, list[str]]:
    """Panel title -> its PromQL, runnable as is against a Prometheus: the dashboard's query variables
    become ``.*`` (their "All" value) and ``$__rate_interval`` becomes ``rate_interval``."""
    from monitoring.config import CONFIG

    board = dashboard(cfg or CONFIG)
    variables = [v["name"] for v in board["templating"]["list"] if v["type"] in ("query", "custom")]
    out: dict[str, list[str]] = {}
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        exprs = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", rate_interval)
            for name in variables:
                expr = re.sub(rf"\$\{{{name}\}}|\${name}\b", ".*", expr)
            if "$" in expr:
                raise ValueError(f"panel {panel['title']!r}: unsubstituted variable in {expr!r}")
            exprs.append(expr)
        out[panel["title"]] = exprs
    return out
