"""Named ``promtool test rules`` cases for every alert: some that must fire, some that must not.

The scenarios are written once, in the profile's own time (its rate window, ``for:`` durations and test
interval) and with rates chosen around the config's thresholds, and rendered into
``monitoring/prometheus/rules.test.yml`` (default profile) and ``rules.fast.test.yml`` (fast profile).
:func:`test_file` refuses to render a file in which an alert lacks a must-fire or a must-not-fire case.
A scenario whose numbers no longer straddle a changed threshold raises instead of testing nothing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from monitoring import promql, rules
from monitoring.config import MonitoringConfig, Profile, Severity, seconds
from monitoring.promql import num

INSTANCE = "rag:8000"


@dataclass(frozen=True)
class Fires:
    labels: Mapping[str, str]  # the firing series' labels (severity and other rule labels are added)
    severity: Severity | None = None  # picks one rule where several share the name (RagErrorBudgetBurn)


@dataclass(frozen=True)
class Check:
    at_s: float
    alert: str
    fires: tuple[Fires, ...] = ()  # empty: must not fire


@dataclass(frozen=True)
class ExprCheck:
    at_s: float
    expr: str
    value: float
    labels: str = "{}"


@dataclass(frozen=True)
class Case:
    name: str
    series: Mapping[str, str]  # series (text form) -> promtool values
    checks: tuple[Check, ...]
    exprs: tuple[ExprCheck, ...] = field(default=())


def duration(s: float) -> str:
    """Seconds as a Prometheus duration: ``1h7m``, ``100s``."""
    s = int(s)
    if s == 0:
        return "0s"
    out = ""
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if s >= size:
            out += f"{s // size}{unit}"
            s %= size
    return out


class Timeline:
    """Builds promtool value strings (expanding notation) on the profile's test interval."""

    def __init__(self, horizon_s: float, interval_s: float) -> None:
        self.i = interval_s
        self.horizon = horizon_s

    def _steps(self, d: float) -> int:
        return max(1, math.ceil(d / self.i))

    def counter(self, *segments: tuple[float, float]) -> str:
        """A counter growing at ``rate`` per second for each ``(rate, duration_s)``; the last segment
        runs to the horizon (pass ``math.inf``)."""
        parts, last = [], 0.0
        for k, (rate, d) in enumerate(segments):
            inc = rate * self.i
            n = self._steps(min(d, self.horizon))
            if k == 0:
                parts.append(f"0+{num(inc)}x{n}")
                last = inc * n
            else:
                start = last + inc
                parts.append(f"{num(start)}+{num(inc)}x{n - 1}")
                last = start + inc * (n - 1)
        return " ".join(parts)

    def rate(self, rate: float) -> str:
        return self.counter((rate, math.inf))

    def gauge(self, *segments: tuple[float, float]) -> str:
        parts = []
        for k, (value, d) in enumerate(segments):
            n = self._steps(min(d, self.horizon))
            parts.append(f"{num(value)}+0x{n if k == 0 else n - 1}")
        return " ".join(parts)

    def constant(self, value: float) -> str:
        return self.gauge((value, math.inf))

    def alternating(self, a: float, b: float) -> str:
        return " ".join(num(a if k % 2 == 0 else b) for k in range(self._steps(self.horizon) + 1))


def _labels(cfg: MonitoringConfig, **labels: str) -> str:
    extra = "".join(f',{k}="{v}"' for k, v in labels.items())
    return f'{{{cfg.selector},instance="{INSTANCE}"{extra}}}'


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(
            f"rule test scenario no longer straddles the threshold: {what}; adjust rule_tests.py"
        )


def _latency_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i, w = "RagHighLatencyP99", seconds(p.test_interval), seconds(p.rate_window)
    f = seconds(p.for_[name])
    at = w + f + 2 * i
    t = Timeline(at + 2 * i, i)
    slo = cfg.latency_p99_s
    edges = [num(slo / 10), num(slo), num(2 * slo), "+Inf"]

    def histogram(route: str, rate: float, slow: bool) -> dict[str, str]:
        # slow: every observation in (slo, 2 slo], p99 = 1.99 slo; fast: all at most slo / 10
        series = {}
        for k, le in enumerate(edges):
            filled = k >= 2 if slow else True
            series[f"rag_query_duration_seconds_bucket{_labels(cfg, route=route, le=le)}"] = t.rate(
                rate if filled else 0
            )
        series[f"rag_query_duration_seconds_count{_labels(cfg, route=route)}"] = t.rate(rate)
        return series

    busy, quiet = 1.0, cfg.latency_min_qps / 2
    _require(busy > cfg.latency_min_qps, "1 query/s is above latency_min_qps")
    cases = [
        Case(
            "latency: p99 above the target on one route fires for that route",
            {**histogram("hybrid", busy, slow=True), **histogram("bm25", busy, slow=False)},
            (Check(at, name, (Fires({"route": "hybrid"}),)),),
        ),
        Case(
            "latency: p99 under the target does not fire",
            {**histogram("hybrid", busy, slow=False), **histogram("bm25", busy, slow=False)},
            (Check(at, name),),
        ),
        Case(
            "latency: a slow route with too little traffic to trust its p99 does not fire (busy one beside)",
            {**histogram("hybrid", quiet, slow=True), **histogram("bm25", busy, slow=False)},
            (Check(at, name),),
        ),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"latency: slow for less than {p.for_[name]} does not fire yet",
                histogram("hybrid", busy, slow=True),
                (Check(f - i, name),),
            )
        )
    return cases


def _burn_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i = "RagErrorBudgetBurn", seconds(p.test_interval)
    page, ticket = sorted(p.burn_windows, key=lambda b: -b.factor)[:2]
    budget = cfg.error_budget
    at = max(seconds(b.for_) for b in p.burn_windows) + max(seconds(b.short) for b in p.burn_windows) + 2 * i
    horizon = at + seconds(page.long) + seconds(page.short) + 4 * i
    t = Timeline(horizon, i)

    def queries(**rates: str) -> dict[str, str]:
        return {
            f"rag_queries_total{_labels(cfg, tenant='acme', route='hybrid', status=s, cache='miss')}": v
            for s, v in rates.items()
        }

    def mix(error_ratio: float, status: str = "error") -> dict[str, str]:
        return queries(**{status: t.rate(error_ratio), "ok": t.rate(1 - error_ratio)})

    both = (Fires({}, Severity.CRITICAL), Fires({}, Severity.WARNING))
    high, medium, low = 0.2, 0.04, 0.001
    _require(high > page.factor * budget, f"{high} errors page")
    _require(ticket.factor * budget < medium < page.factor * budget, f"{medium} errors only ticket")
    _require(low < ticket.factor * budget, f"{low} errors stay quiet")
    _require(0.05 < page.factor * budget < 0.05 / 0.5, "5% errors page only without the 50% cancelled")
    # a fast burn that stopped: half the queries fail for the page's long window, then none
    stop = seconds(page.long)
    after = stop + seconds(page.short) + 2 * i
    _require(
        seconds(ticket.short) > seconds(page.short) + 2 * i, "the ticket's short window still sees errors"
    )
    _require(seconds(ticket.for_) <= after - 2 * i, "the ticket has fired by then")
    return [
        Case(
            f"error budget: {num(high * 100)}% errors page (critical) and ticket (warning)",
            mix(high),
            (Check(at, name, both),),
            (ExprCheck(at, f"round({promql.query_errors_ratio(page.short)}, 0.001)", high),),
        ),
        Case(
            f"error budget: {num(medium * 100)}% errors only ticket (slow burn)",
            mix(medium),
            (Check(at, name, (Fires({}, Severity.WARNING),)),),
        ),
        Case(
            f"error budget: {num(low * 100)}% errors fire nothing",
            mix(low),
            (Check(at, name),),
        ),
        Case(
            f"error budget: {num(high * 100)}% cancelled queries are not errors",
            mix(high, status="cancelled"),
            (Check(at, name),),
        ),
        Case(
            "error budget: cancelled queries leave the denominator (5% errors among 50% cancelled page)",
            queries(error=t.rate(0.05), cancelled=t.rate(0.5), ok=t.rate(0.45)),
            (Check(at, name, both),),
        ),
        Case(
            "error budget: a fast burn that stopped clears the page (short window) and keeps the ticket",
            queries(error=t.counter((0.5, stop), (0.0, math.inf)), ok=t.rate(0.5)),
            (Check(after, name, (Fires({}, Severity.WARNING),)),),
        ),
    ]


def _cache_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i, w = "RagLowCacheHitRate", seconds(p.test_interval), seconds(p.rate_window)
    f = seconds(p.for_[name])
    at = w + f + 2 * i
    t = Timeline(at + 2 * i, i)

    def lookups(hit_ratio: float, per_s: float = 1.0, hit_series: bool = True) -> dict[str, str]:
        half = hit_ratio / 2 * per_s  # half the hits at l1, half at l2 (looked up on l1 misses)
        rates = {("l1", "hit"): half, ("l1", "miss"): per_s - half, ("l2", "hit"): half}
        rates["l2", "miss"] = per_s - 2 * half
        return {
            f"rag_cache_lookups_total{_labels(cfg, level=lv, result=r)}": t.rate(v)
            for (lv, r), v in rates.items()
            if hit_series or r != "hit"
        }

    low, healthy = cfg.cache_hit_ratio_min / 4, min(0.9, cfg.cache_hit_ratio_min * 4)
    cases = [
        Case(
            f"cache: {num(low * 100)}% hits fire",
            lookups(low),
            (Check(at, name, (Fires({}),)),),
            (ExprCheck(at, f"round({promql.cache_hits_ratio(p.rate_window)}, 0.001)", round(low, 3)),),
        ),
        Case(
            "cache: no hit ever (the service has not exported a hit series yet) fires",
            lookups(0.0, hit_series=False),
            (Check(at, name, (Fires({}),)),),
        ),
        Case(f"cache: {num(healthy * 100)}% hits do not fire", lookups(healthy), (Check(at, name),)),
        Case(
            "cache: no hits at too little traffic do not fire",
            lookups(0.0, per_s=cfg.cache_min_lookups_per_s / 2),
            (Check(at, name),),
        ),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"cache: low for less than {p.for_[name]} does not fire yet",
                lookups(low),
                (Check(f - i, name),),
            )
        )
    return cases


def _cost_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i, w = "RagHighCostRate", seconds(p.test_interval), seconds(p.rate_window)
    f = seconds(p.for_[name])
    at = w + f + 2 * i
    t = Timeline(at + 2 * i, i)

    def spend(times_max: float) -> dict[str, str]:
        per_s = times_max * cfg.cost_per_hour_max / 3600
        return {
            f"rag_cost_total{_labels(cfg, step='rerank', tenant='acme')}": t.rate(per_s * 0.75),
            f"rag_cost_total{_labels(cfg, step='embed', tenant='globex')}": t.rate(per_s * 0.25),
        }

    cases = [
        Case(
            "cost: twice the hourly maximum fires",
            spend(2),
            (Check(at, name, (Fires({}),)),),
            (
                ExprCheck(
                    at, f"round({promql.cost_per_hour(p.rate_window)}, 0.001)", 2 * cfg.cost_per_hour_max
                ),
            ),
        ),
        Case("cost: half the hourly maximum does not fire", spend(0.5), (Check(at, name),)),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"cost: high for less than {p.for_[name]} does not fire yet",
                spend(2),
                (Check(f - i, name),),
            )
        )
    return cases


def _down_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i = "RagServiceDown", seconds(p.test_interval)
    f = seconds(p.for_[name])
    at = f + 2 * i
    t = Timeline(at + 2 * i, i)
    up = f"up{_labels(cfg)}"
    cases = [
        Case(
            "service down: up == 0 fires",
            {up: t.constant(0)},
            (Check(at, name, (Fires({"job": cfg.job, "instance": INSTANCE}),)),),
        ),
        Case(
            "service down: no target for the job at all fires (absent)",
            {'up{job="prometheus",instance="localhost:9090"}': t.constant(1)},
            (Check(at, name, (Fires({"job": cfg.job}),)),),
        ),
        Case("service down: up == 1 does not fire", {up: t.constant(1)}, (Check(at, name),)),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"service down: a failed scrape shorter than {p.for_[name]} does not fire",
                {up: t.gauge((1, i), (0, f - 2 * i), (1, math.inf))},
                (Check(f - i, name), Check(at, name)),
            )
        )
    return cases


def _concurrency_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i = "RagHighConcurrency", seconds(p.test_interval)
    f = seconds(p.for_[name])
    at = f + 2 * i
    t = Timeline(at + 2 * i, i)
    inflight = f"rag_inflight_queries{_labels(cfg)}"
    cases = [
        Case(
            f"concurrency: {2 * cfg.inflight_max} in flight fires",
            {inflight: t.constant(2 * cfg.inflight_max)},
            (Check(at, name, (Fires({"instance": INSTANCE}),)),),
        ),
        Case(
            f"concurrency: exactly {cfg.inflight_max} in flight does not fire",
            {inflight: t.constant(cfg.inflight_max)},
            (Check(at, name),),
        ),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"concurrency: a burst shorter than {p.for_[name]} does not fire",
                {inflight: t.gauge((2 * cfg.inflight_max, f / 2), (1, math.inf))},
                (Check(f - i, name), Check(at, name)),
            )
        )
    return cases


def _breaker_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i = "RagBreakerOpenTooLong", seconds(p.test_interval)
    f = seconds(p.for_[name])
    at = f + 2 * i
    t = Timeline(at + 2 * i, i)

    def states(breaker: str, closed: str, open_: str, half_open: str) -> dict[str, str]:
        return {
            f"rag_breaker_state{_labels(cfg, breaker=breaker, state=s)}": v
            for s, v in (("closed", closed), ("open", open_), ("half-open", half_open))
        }

    closed = states("reranker", t.constant(1), t.constant(0), t.constant(0))
    qdrant = {"breaker": "qdrant", "job": cfg.job, "instance": INSTANCE}
    cases = [
        Case(
            "breaker: open the whole time fires for that breaker",
            {**states("qdrant", t.constant(0), t.constant(1), t.constant(0)), **closed},
            (Check(at, name, (Fires(qdrant),)),),
        ),
        Case(
            "breaker: probing open <-> half-open without closing still fires",
            states("qdrant", t.constant(0), t.alternating(1, 0), t.alternating(0, 1)),
            (Check(at, name, (Fires(qdrant),)),),
        ),
        Case("breaker: closed does not fire", closed, (Check(at, name),)),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"breaker: open for less than {p.for_[name]}, then closed, does not fire",
                states(
                    "qdrant",
                    t.gauge((0, f / 2), (1, math.inf)),
                    t.gauge((1, f / 2), (0, math.inf)),
                    t.constant(0),
                ),
                (Check(f - i, name), Check(at, name)),
            )
        )
    return cases


def _background_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i, w = "RagBackgroundErrors", seconds(p.test_interval), seconds(p.background_window)
    f = seconds(p.for_[name])
    at = 2 * w + f + 2 * i
    t = Timeline(at + 2 * i, i)
    recent, old = at - f - w / 2, w / 2  # when the error is counted: inside the window at `at`, or not
    _require(at - old > w + i, "the old error has left the window")

    def errors(loop: str) -> str:
        return f"rag_background_errors_total{_labels(cfg, loop=loop)}"

    def first_error(when: float) -> str:
        """No series until the loop's first error, then 1: a counter child appears on its first inc."""
        n = math.ceil(when / i)
        return f"_x{n} 1x{math.ceil((at + 2 * i) / i) - n}"

    quiet = {errors("breaker_sync"): t.constant(3)}  # errors long ago, none since
    spend = {"loop": "spend_sync", "instance": INSTANCE}
    return [
        Case(
            f"background errors: errors counted in the last {p.background_window} fire for that loop",
            {errors("spend_sync"): t.gauge((2, recent), (3, i), (5, math.inf)), **quiet},
            (Check(at, name, (Fires(spend),)),),
        ),
        Case(
            "background errors: a loop's first error (its series appears with 1) fires",
            {errors("spend_sync"): first_error(recent), **quiet},
            (Check(at, name, (Fires(spend),)),),
        ),
        Case("background errors: a flat counter does not fire", quiet, (Check(at, name),)),
        Case(
            f"background errors: one old error, out of the {p.background_window} window, does not fire",
            {errors("spend_sync"): t.gauge((2, old), (3, math.inf)), **quiet},
            (Check(at, name),),
        ),
        Case(
            f"background errors: a loop's first error, older than {p.background_window}, does not fire",
            {errors("spend_sync"): first_error(old), **quiet},
            (Check(at, name),),
        ),
    ]
    return cases


def _replica_version_cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    name, i = "RagReplicaVersionsDiffer", seconds(p.test_interval)
    f = seconds(p.for_[name])
    at = f + 2 * i
    t = Timeline(at + 2 * i, i)

    def version(instance: str) -> str:
        return f'rag_index_version{{{cfg.selector},instance="{instance}"}}'

    cases = [
        Case(
            "replica versions: one replica left behind fires for the job",
            {version("a:8000"): t.constant(8), version("b:8000"): t.constant(7)},
            (Check(at, name, (Fires({"job": cfg.job}),)),),
        ),
        Case(
            "replica versions: all on one version does not fire",
            {version("a:8000"): t.constant(8), version("b:8000"): t.constant(8)},
            (Check(at, name),),
        ),
    ]
    if f >= 2 * i:
        cases.append(
            Case(
                f"replica versions: a switch shorter than {p.for_[name]} does not fire",
                {version("a:8000"): t.constant(8), version("b:8000"): t.gauge((7, f / 2), (8, math.inf))},
                (Check(f - i, name), Check(at, name)),
            )
        )
    return cases


def cases(cfg: MonitoringConfig, p: Profile) -> list[Case]:
    return [
        *_latency_cases(cfg, p),
        *_burn_cases(cfg, p),
        *_cache_cases(cfg, p),
        *_cost_cases(cfg, p),
        *_down_cases(cfg, p),
        *_concurrency_cases(cfg, p),
        *_breaker_cases(cfg, p),
        *_background_cases(cfg, p),
        *_replica_version_cases(cfg, p),
    ]


def coverage(items: Sequence[Case]) -> dict[str, tuple[int, int]]:
    """Alert name -> (checks that must fire, checks that must not)."""
    out: dict[str, tuple[int, int]] = {}
    for case in items:
        for c in case.checks:
            fire, quiet = out.get(c.alert, (0, 0))
            out[c.alert] = (fire + 1, quiet) if c.fires else (fire, quiet + 1)
    return out


def _expected(alert_rules: list[rules.Alert], check: Check) -> list[dict[str, Any]]:
    out = []
    for fire in check.fires:
        matching = [a for a in alert_rules if a.name == check.alert and fire.severity in (None, a.severity)]
        if len(matching) != 1:
            raise ValueError(f"{check.alert} severity {fire.severity}: {len(matching)} rules match, want 1")
        rule = matching[0]
        out.append(
            {
                "exp_labels": {**fire.labels, **rule.all_labels},
                "exp_annotations": {k: rules.render(v, fire.labels) for k, v in rule.annotations.items()},
            }
        )
    return out


def test_file(cfg: MonitoringConfig, p: Profile, rule_file: str) -> dict[str, Any]:
    """The promtool test file for one profile's rule file (a path relative to the test file)."""
    alert_rules = rules.linked_alerts(cfg, p)
    items = cases(cfg, p)
    cov = coverage(items)
    for alert in sorted({a.name for a in alert_rules}):
        fire, quiet = cov.get(alert, (0, 0))
        if not fire or not quiet:
            raise ValueError(
                f"{alert}: {fire} must-fire and {quiet} must-not-fire cases; want at least 1 each"
            )
    tests = []
    for case in items:
        group: dict[str, Any] = {
            "name": case.name,
            "interval": p.test_interval,
            "input_series": [{"series": s, "values": v} for s, v in case.series.items()],
            "alert_rule_test": [
                {"eval_time": duration(c.at_s), "alertname": c.alert, "exp_alerts": _expected(alert_rules, c)}
                for c in case.checks
            ],
        }
        if case.exprs:
            group["promql_expr_test"] = [
                {
                    "expr": e.expr,
                    "eval_time": duration(e.at_s),
                    "exp_samples": [{"labels": e.labels, "value": e.value}],
                }
                for e in case.exprs
            ]
        tests.append(group)
    return {"rule_files": [rule_file], "evaluation_interval": p.test_interval, "tests": tests}
