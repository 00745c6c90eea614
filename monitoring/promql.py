"""Every PromQL expression of the monitoring, in one place, built from the config.

- :func:`dashboard_queries`: the dashboard's named expressions (Grafana variables ``$tenant`` and
  ``$__rate_interval`` left in); the layout (:mod:`monitoring.dashboard`) refers to them by name.
- :func:`recording_rules` and the ``*_alert`` functions: the rules (:mod:`monitoring.rules` adds names,
  labels, annotations and runbook links).

Metric names are those of ``rag/metrics.py``; tests check that every name used here is exported.
"""

from __future__ import annotations

from dataclasses import dataclass
from textwrap import indent

from monitoring.config import BurnWindow, MonitoringConfig, Profile, seconds

RATE = "$__rate_interval"
TENANT = 'tenant=~"$tenant"'


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = "__auto"


def num(x: float) -> str:
    """A threshold as PromQL writes it: ``0.072``, not ``0.07200000000000001``."""
    return f"{x:.10g}"


def sel(cfg: MonitoringConfig, metric: str, *matchers: str) -> str:
    return f"{metric}{{{','.join((cfg.selector, *matchers))}}}"


def _rate(cfg: MonitoringConfig, metric: str, window: str, *matchers: str) -> str:
    return f"rate({sel(cfg, metric, *matchers)}[{window}])"


def _sum_rate(cfg: MonitoringConfig, metric: str, window: str, *matchers: str, by: str = "") -> str:
    grouping = f" by ({by}) " if by else ""
    return f"sum{grouping}({_rate(cfg, metric, window, *matchers)})"


def _quantile(cfg: MonitoringConfig, q: float, metric: str, window: str, by: str = "") -> str:
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, {_sum_rate(cfg, f'{metric}_bucket', window, by=labels)})"


def or_zero(expr: str) -> str:
    """For counters of refusals and failures (and the fallback state), whose healthy value is "none
    happened": a flat 0 rather than Grafana's "No data", which also reads as a broken scrape."""
    return f"{expr} or vector(0)"


def _share(part: str, whole: str) -> str:
    """``part / whole`` for counters, 0 (not empty) while ``part`` has no series yet: a counter child
    appears on its first increment, so "no error yet" or "no cache hit yet" would otherwise read as no
    data, and an alert on a low share would never fire for a cache that never hits."""
    return f"(\n{indent(part, '  ')}\n  or\n{indent('0 * ' + whole, '  ')}\n)\n/\n{whole}"


def _ratio(num_expr: str, den_expr: str) -> str:
    return f"{num_expr}\n/\n{den_expr}"


# -- SLIs shared by the dashboard and the rules ------------------------------------------------------------


def query_error_ratio(cfg: MonitoringConfig, window: str, *matchers: str) -> str:
    """The availability SLI: queries ending in status="error" over queries not cancelled by the client
    (degraded answers count as good; cancelled ones are the client's doing)."""
    return _share(
        _sum_rate(cfg, "rag_queries_total", window, *matchers, 'status="error"'),
        _sum_rate(cfg, "rag_queries_total", window, *matchers, 'status!="cancelled"'),
    )


def http_error_ratio(cfg: MonitoringConfig, window: str) -> str:
    return _share(
        _sum_rate(cfg, "rag_http_requests_total", window, 'status=~"5.."'),
        _sum_rate(cfg, "rag_http_requests_total", window),
    )


def cache_hit_ratio(cfg: MonitoringConfig, window: str) -> str:
    """Hits at any level over l1 lookups: every query reaching the cache looks up l1 first, l2 on a miss."""
    return _share(
        _sum_rate(cfg, "rag_cache_lookups_total", window, 'result="hit"'),
        _sum_rate(cfg, "rag_cache_lookups_total", window, 'level="l1"'),
    )


# -- the dashboard ---------------------------------------------------------------------------------------


def dashboard_queries(cfg: MonitoringConfig) -> dict[str, Query]:
    t = TENANT
    q = {
        # traffic
        "qps_total": Query(_sum_rate(cfg, "rag_queries_total", RATE, t), "queries/s"),
        "qps_by_route": Query(_sum_rate(cfg, "rag_queries_total", RATE, t, by="route"), "{{route}}"),
        "http_rps_by_route": Query(_sum_rate(cfg, "rag_http_requests_total", RATE, by="route"), "{{route}}"),
        "queries_by_status": Query(_sum_rate(cfg, "rag_queries_total", RATE, t, by="status"), "{{status}}"),
        "rate_limited_by_tenant": Query(
            or_zero(_sum_rate(cfg, "rag_rate_limited_total", RATE, t, by="tenant")), "{{tenant}}"
        ),
        "instances_up": Query(f"sum(up{{{cfg.selector}}})", "up"),
        # latency
        "latency_p50": Query(_quantile(cfg, 0.5, "rag_query_duration_seconds", RATE), "p50"),
        "latency_p95": Query(_quantile(cfg, 0.95, "rag_query_duration_seconds", RATE), "p95"),
        "latency_p99": Query(_quantile(cfg, 0.99, "rag_query_duration_seconds", RATE), "p99"),
        "latency_p99_by_route": Query(
            _quantile(cfg, 0.99, "rag_query_duration_seconds", RATE, by="route"), "{{route}}"
        ),
        "http_latency_p99_by_route": Query(
            _quantile(cfg, 0.99, "rag_http_request_duration_seconds", RATE, by="route"), "{{route}}"
        ),
        "step_latency_p95": Query(
            _quantile(cfg, 0.95, "rag_step_duration_seconds", RATE, by="step"), "{{step}}"
        ),
        "inflight_total": Query(f"sum({sel(cfg, 'rag_inflight_queries')})", "in flight"),
        "inflight_by_instance": Query(
            f"sum by (instance) ({sel(cfg, 'rag_inflight_queries')})", "{{instance}}"
        ),
        # errors and success
        "success_ratio": Query(
            _share(
                _sum_rate(cfg, "rag_queries_total", RATE, t, 'status=~"ok|degraded"'),
                _sum_rate(cfg, "rag_queries_total", RATE, t),
            ),
            "ok + degraded",
        ),
        "query_error_ratio": Query(query_error_ratio(cfg, RATE, t), "queries: status=error"),
        "http_5xx_ratio": Query(http_error_ratio(cfg, RATE), "HTTP 5xx"),
        "error_budget_burn_1h": Query(
            f"(\n{query_error_ratio(cfg, '1h')}\n)\n/ {num(cfg.error_budget)}", "1h"
        ),
        "errors_by_component": Query(
            or_zero(_sum_rate(cfg, "rag_errors_total", RATE, by="component, type")), "{{component}}: {{type}}"
        ),
        # overload: goodput (full answers), what was given up and for what, the queues and the loop
        "answers_by_outcome": Query(_sum_rate(cfg, "rag_queries_total", RATE, t, by="status"), "{{status}}"),
        "degraded_share_by_rung": Query(
            or_zero(
                _sum_rate(cfg, "rag_degradations_total", RATE, by="step, reason")
                + f"\n/ scalar({_sum_rate(cfg, 'rag_queries_total', RATE)})"
            ),
            "{{step}}: {{reason}}",
        ),
        "shed_share": Query(
            _share(
                _sum_rate(cfg, "rag_degradations_total", RATE, 'reason="shed"'),
                _sum_rate(cfg, "rag_queries_total", RATE),
            ),
            "steps shed per query",
        ),
        "refused_share": Query(
            _share(
                _sum_rate(cfg, "rag_http_requests_total", RATE, 'status="503"'),
                _sum_rate(cfg, "rag_http_requests_total", RATE),
            ),
            "503 share",
        ),
        "queue_wait_p95": Query(
            _quantile(cfg, 0.95, "rag_queue_wait_seconds", RATE, by="queue"), "{{queue}} p95"
        ),
        "loop_lag": Query(f"max by (instance) ({sel(cfg, 'rag_event_loop_lag_seconds')})", "{{instance}}"),
        "index_version": Query(sel(cfg, "rag_index_version"), "{{instance}}"),  # a series per worker too
        "index_switches": Query(
            f"sum by (instance) (increase({sel(cfg, 'rag_index_switches_total')}[{RATE}]))", "{{instance}}"
        ),
        "degradations_by_step": Query(
            or_zero(_sum_rate(cfg, "rag_degradations_total", RATE, by="step, reason")), "{{step}}: {{reason}}"
        ),
        "llm_requests_by_status": Query(
            _sum_rate(cfg, "rag_llm_requests_total", RATE, by="status"), "{{status}}"
        ),
        # cache
        "cache_hit_ratio": Query(cache_hit_ratio(cfg, RATE), "any level"),
        "cache_hit_ratio_by_level": Query(
            _share(
                _sum_rate(cfg, "rag_cache_lookups_total", RATE, 'result="hit"', by="level"),
                _sum_rate(cfg, "rag_cache_lookups_total", RATE, by="level"),
            ),
            "{{level}}",
        ),
        "queries_by_cache": Query(_sum_rate(cfg, "rag_queries_total", RATE, t, by="cache"), "{{cache}}"),
        "cache_coalesced": Query(_sum_rate(cfg, "rag_cache_coalesced_total", RATE), "coalesced"),
        # cost and routing
        "cost_per_hour_total": Query(f"{_sum_rate(cfg, 'rag_cost_total', RATE, t)} * 3600", "money/h"),
        "cost_per_hour_by_step": Query(
            f"{_sum_rate(cfg, 'rag_cost_total', RATE, t, by='step')} * 3600", "step: {{step}}"
        ),
        "cost_per_hour_by_tenant": Query(
            f"{_sum_rate(cfg, 'rag_cost_total', RATE, t, by='tenant')} * 3600", "tenant: {{tenant}}"
        ),
        "cpu_seconds_by_step": Query(
            _sum_rate(cfg, "rag_cost_cpu_seconds_total", RATE, t, by="step"), "{{step}}"
        ),
        "query_cost_mean_by_arm": Query(
            _ratio(
                _sum_rate(cfg, "rag_query_cost_sum", RATE, by="arm"),
                _sum_rate(cfg, "rag_query_cost_count", RATE, by="arm"),
            ),
            "{{arm}}",
        ),
        "budget_pressure": Query(f"max by (tenant) ({sel(cfg, 'rag_budget_pressure', t)})", "{{tenant}}"),
        "router_by_arm": Query(_sum_rate(cfg, "rag_router_decisions_total", RATE, by="arm"), "arm: {{arm}}"),
        "router_by_complexity": Query(
            _sum_rate(cfg, "rag_router_decisions_total", RATE, by="complexity"), "complexity: {{complexity}}"
        ),
        # resilience
        "breaker_states": Query(
            f"max by (breaker, state) ({sel(cfg, 'rag_breaker_state')} == 1)", "{{breaker}}: {{state}}"
        ),
        "breaker_transitions": Query(
            or_zero(_sum_rate(cfg, "rag_breaker_transitions_total", RATE, by="breaker, to_state")),
            "{{breaker}} → {{to_state}}",
        ),
        # rollout
        "rollout_assignments": Query(
            _sum_rate(cfg, "rag_rollout_assignments_total", RATE, by="flag, variant"), "{{flag}}: {{variant}}"
        ),
        "fallback_tripped": Query(
            or_zero(f"max by (tenant, flag) ({sel(cfg, 'rag_fallback_tripped', t)})"), "{{tenant}}: {{flag}}"
        ),
        "shadow_overlap_mean": Query(
            _ratio(
                _sum_rate(cfg, "rag_shadow_overlap_at_10_sum", RATE, by="flag"),
                _sum_rate(cfg, "rag_shadow_overlap_at_10_count", RATE, by="flag"),
            ),
            "{{flag}}",
        ),
        # feedback judging a shadowed request's documents scores both rankings (rag/service/shadow.py)
        "shadow_judged_quality": Query(
            _ratio(
                _sum_rate(cfg, "rag_shadow_judged_quality_total", RATE, by="flag, side"),
                f"on (flag) group_left {_sum_rate(cfg, 'rag_shadow_judged_total', RATE, by='flag')}",
            ),
            "{{flag}}: {{side}}",
        ),
        "shadow_runs_by_status": Query(
            _sum_rate(cfg, "rag_shadow_runs_total", RATE, by="flag, status"), "{{flag}}: {{status}}"
        ),
    }
    q["cache_served_ratio"] = Query(
        _share(
            _sum_rate(cfg, "rag_queries_total", RATE, t, 'cache=~"l1|l2"'),
            _sum_rate(cfg, "rag_queries_total", RATE, t, 'cache!~"off|none"'),
        ),
        "answered from cache (queries)",
    )
    return q


# -- recording rules -------------------------------------------------------------------------------------


def latency_count_rate(w: str) -> str:
    return f"rag:query_duration_seconds:count_rate{w}"


def latency_p99(w: str) -> str:
    return f"rag:query_duration_seconds:p99_rate{w}"


def query_errors_ratio(w: str) -> str:
    return f"rag:query_errors:ratio_rate{w}"


def request_errors_ratio(w: str) -> str:
    return f"rag:request_errors:ratio_rate{w}"


def cache_hits_ratio(w: str) -> str:
    return f"rag:cache_hits:ratio_rate{w}"


def cache_lookups_rate(w: str) -> str:
    return f"rag:cache_lookups:rate{w}"


def cost_per_hour(w: str) -> str:
    return f"rag:cost_per_hour:rate{w}"


def burn_windows(profile: Profile) -> list[str]:
    """The distinct windows of the burn-rate rules, shortest first."""
    windows = {w for b in profile.burn_windows for w in (b.long, b.short)}
    return sorted(windows, key=seconds)


def recording_rules(cfg: MonitoringConfig, profile: Profile) -> dict[str, str]:
    w = profile.rate_window
    rules = {
        latency_count_rate(w): _sum_rate(cfg, "rag_query_duration_seconds_count", w, by="route"),
        latency_p99(w): _quantile(cfg, 0.99, "rag_query_duration_seconds", w, by="route"),
        request_errors_ratio(w): http_error_ratio(cfg, w),
        cache_hits_ratio(w): cache_hit_ratio(cfg, w),
        cache_lookups_rate(w): _sum_rate(cfg, "rag_cache_lookups_total", w, 'level="l1"'),
        cost_per_hour(w): f"{_sum_rate(cfg, 'rag_cost_total', w)} * 3600",
    }
    for window in burn_windows(profile):
        rules[query_errors_ratio(window)] = query_error_ratio(cfg, window)
    return rules


# -- alert conditions ------------------------------------------------------------------------------------


def latency_alert(cfg: MonitoringConfig, p: Profile) -> str:
    w = p.rate_window
    return (
        f"{latency_p99(w)} > {num(cfg.latency_p99_s)}\n"
        f"and on (route)\n{latency_count_rate(w)} > {num(cfg.latency_min_qps)}"
    )


def burn_alert(cfg: MonitoringConfig, b: BurnWindow) -> str:
    threshold = f"({num(b.factor)} * {num(cfg.error_budget)})"
    return f"{query_errors_ratio(b.long)} > {threshold}\nand\n{query_errors_ratio(b.short)} > {threshold}"


def cache_alert(cfg: MonitoringConfig, p: Profile) -> str:
    w = p.rate_window
    return (
        f"{cache_hits_ratio(w)} < {num(cfg.cache_hit_ratio_min)}\n"
        f"and\n{cache_lookups_rate(w)} > {num(cfg.cache_min_lookups_per_s)}"
    )


def cost_alert(cfg: MonitoringConfig, p: Profile) -> str:
    return f"{cost_per_hour(p.rate_window)} > {num(cfg.cost_per_hour_max)}"


def down_alert(cfg: MonitoringConfig) -> str:
    return f"up{{{cfg.selector}}} == 0\nor\nabsent(up{{{cfg.selector}}})"


def concurrency_alert(cfg: MonitoringConfig) -> str:
    return f"sum by (instance) ({sel(cfg, 'rag_inflight_queries')}) > {cfg.inflight_max}"


def breaker_alert(cfg: MonitoringConfig) -> str:
    """Not closed (open, or half-open probing) at every evaluation for the ``for:`` duration: a probe
    cycle open → half-open → open does not reset the clock, as ``state="open" == 1`` would."""
    closed = sel(cfg, "rag_breaker_state", 'state="closed"')
    return f"max without (state) ({closed}) == 0"


def replica_versions_alert(cfg: MonitoringConfig) -> str:
    """The replicas of a job serve different index versions (every process follows the published one
    within a poll, so a lasting difference is one that does not follow)."""
    version = sel(cfg, "rag_index_version")
    return f"max by (job) ({version}) - min by (job) ({version}) > 0"


def background_errors_alert(cfg: MonitoringConfig, p: Profile) -> str:
    """A background loop (breaker sync, spend sync, rollout config, bandit store) counted an error in the
    window, per loop and instance. A loop's counter child appears on its first error, with the value 1,
    which ``increase`` cannot see (one sample, nothing to compare): the second clause fires on a series
    that is there now and was not one window ago."""
    errors, w = sel(cfg, "rag_background_errors_total"), p.background_window
    return (
        f"sum by (loop, instance) (increase({errors}[{w}])) > 0\n"
        f"or\nsum by (loop, instance) ({errors} unless {errors} offset {w}) > 0"
    )
