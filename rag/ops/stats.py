"""`rag stats URL`: a terminal summary of a running service's ``/metrics``, each line judged healthy,
warning or critical against the alert thresholds.

Cumulative since the server started, or with ``interval_s`` the difference between two scrapes that far
apart (what happened in the window: rates, window quantiles). The math is small pure functions
(:func:`histogram_quantile`, :func:`window`, :func:`summarize`); :func:`run` does the I/O.
"""

from __future__ import annotations

import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]  # sorted (name, value) pairs: hashable

QUANTILES = (0.5, 0.95, 0.99)
ANSWERED = ("ok", "degraded")  # statuses of rag_queries_total that count as success
# sample types that accumulate (a window subtracts them); the rest (gauges, info) are read as they are
ACCUMULATING = frozenset({"counter", "histogram", "summary", "gaugehistogram"})


class Level(StrEnum):
    """How a line stands against its threshold; ``info`` has none, ``no-data`` had nothing to judge."""

    HEALTHY = "healthy"
    WARNING = "warning"
    CRITICAL = "critical"
    INFO = "info"
    NO_DATA = "no-data"

    @property
    def severity(self) -> int:
        return {Level.WARNING: 1, Level.CRITICAL: 2}.get(self, 0)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The alerting rules' thresholds. The source is ``monitoring/config.py`` (``MonitoringConfig``, which
    generates the Prometheus rules); :func:`alert_thresholds` reads it where that package is importable
    (a checkout) and these defaults, kept equal to it by a test, serve where it is not (an installed
    ``rag``). Field names follow ``MonitoringConfig``."""

    latency_p99_s: float = 1.5  # RagHighLatencyP99: query p99 above this (a step's p99 too): warning
    latency_min_qps: float = 0.05  # below this rate a p99 is noise: not judged (windows only)
    # RagErrorBudgetBurn: status=error over non-cancelled queries, above burn factor x error budget
    # (6 x 0.5 % warning, 14.4 x 0.5 % critical, for the 99.5 % availability SLO)
    error_rate_warning: float = 0.03
    error_rate_critical: float = 0.072
    cache_hit_ratio_min: float = 0.10  # RagLowCacheHitRate: (l1 + l2 hits) / l1 lookups below this
    cache_min_lookups_per_s: float = 0.05  # below this rate the hit ratio is not judged (windows only)
    cost_per_hour_max: float = 5.0  # RagHighCostRate: money per hour above this
    inflight_max: float = 32  # RagHighConcurrency: queries in flight above this
    # RagBreakerOpenTooLong: any breaker not closed is a warning here (a scrape cannot tell for how long)

    def __post_init__(self) -> None:
        if not 0 <= self.error_rate_warning <= self.error_rate_critical <= 1:
            raise ValueError(
                f"error rate thresholds must satisfy 0 <= warning <= critical <= 1, got "
                f"{self.error_rate_warning} and {self.error_rate_critical}"
            )


def alert_thresholds() -> Thresholds:
    """The thresholds of ``monitoring.config.CONFIG`` (its default profile's burn windows give the error
    rates), or :class:`Thresholds`' defaults where the ``monitoring`` package is not importable."""
    try:
        from monitoring.config import CONFIG, Severity
    except ImportError:
        return Thresholds()
    burns = CONFIG.profile("default").burn_windows
    factor = {sev: min(b.factor for b in burns if b.severity is sev) for sev in {b.severity for b in burns}}
    budget = CONFIG.error_budget
    return Thresholds(
        latency_p99_s=CONFIG.latency_p99_s,
        latency_min_qps=CONFIG.latency_min_qps,
        error_rate_warning=round(factor.get(Severity.WARNING, factor[Severity.CRITICAL]) * budget, 10),
        error_rate_critical=round(factor[Severity.CRITICAL] * budget, 10),
        cache_hit_ratio_min=CONFIG.cache_hit_ratio_min,
        cache_min_lookups_per_s=CONFIG.cache_min_lookups_per_s,
        cost_per_hour_max=CONFIG.cost_per_hour_max,
        inflight_max=CONFIG.inflight_max,
    )


# -- scrapes ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Scrape:
    """One ``/metrics`` exposition: sample name → {labels: value}, and each sample's metric type."""

    samples: Mapping[str, Mapping[Labels, float]]
    types: Mapping[str, str]
    taken_at: float

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        """The samples called ``name`` whose labels include ``match``."""
        out = []
        for labels, value in self.samples.get(name, {}).items():
            as_dict = dict(labels)
            if all(as_dict.get(k) == v for k, v in match.items()):
                out.append((as_dict, value))
        return out

    def total(self, name: str, **match: str) -> float:
        return sum(v for _, v in self.series(name, **match))

    def has(self, name: str) -> bool:
        return bool(self.samples.get(name))


def parse_scrape(text: str, taken_at: float | None = None) -> Scrape:
    """Parse Prometheus text exposition (``_created`` samples dropped: timestamps, not values)."""
    samples: dict[str, dict[Labels, float]] = defaultdict(dict)
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.endswith("_created"):
                continue
            samples[s.name][tuple(sorted(s.labels.items()))] = float(s.value)
            types[s.name] = family.type
    return Scrape(dict(samples), types, time.time() if taken_at is None else taken_at)


def window(after: Scrape, before: Scrape) -> Scrape:
    """What accumulated between two scrapes: counters and histograms subtracted (a series that went down
    was reset by a restart, so its whole later value counts, as Prometheus' ``increase`` does); gauges
    are the later scrape's."""
    samples: dict[str, dict[Labels, float]] = {}
    for name, series in after.samples.items():
        if after.types.get(name) not in ACCUMULATING:
            samples[name] = dict(series)
            continue
        earlier = before.samples.get(name, {})
        samples[name] = {
            labels: value - earlier.get(labels, 0.0) if value >= earlier.get(labels, 0.0) else value
            for labels, value in series.items()
        }
    return Scrape(samples, after.types, after.taken_at)


# -- math ---------------------------------------------------------------------------------------------


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """Prometheus' ``histogram_quantile``: ``buckets`` are (upper bound ``le``, cumulative count) with a
    ``+Inf`` bucket; linear interpolation inside the bucket the rank falls in (from 0 for the first
    bucket); a rank in the ``+Inf`` bucket answers the highest finite bound. None without observations
    (or without a ``+Inf`` bucket)."""
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be in [0, 1], got {q}")
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    running = 0.0  # counts must not decrease (a window over a restart can make them): as Prometheus does
    fixed = []
    for le, count in ordered:
        running = max(running, count)
        fixed.append((le, running))
    total = fixed[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for i, (le, count) in enumerate(fixed):
        if count >= rank and count > 0:
            if math.isinf(le):
                return fixed[i - 1][0] if i > 0 else None
            if i == 0 and le <= 0:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None  # unreachable: the +Inf bucket holds the total


def histogram_buckets(
    scrape: Scrape, name: str, by: str | None = None
) -> dict[str, list[tuple[float, float]]]:
    """``name``'s cumulative buckets summed over every label but ``le`` (and ``by``, which keys the
    result; without ``by`` the one key is ``""``)."""
    grouped: dict[str, dict[float, float]] = defaultdict(lambda: defaultdict(float))
    for labels, value in scrape.series(f"{name}_bucket"):
        grouped[labels.get(by, "") if by else ""][float(labels["le"])] += value
    return {key: sorted(counts.items()) for key, counts in grouped.items()}


def ratio(part: float, whole: float) -> float | None:
    return part / whole if whole > 0 else None


def per_hour(amount: float, seconds: float | None) -> float | None:
    return amount * 3600.0 / seconds if seconds and seconds > 0 else None


# -- judging ------------------------------------------------------------------------------------------


def above(value: float | None, warning: float, critical: float | None = None) -> Level:
    if value is None:
        return Level.NO_DATA
    if critical is not None and value > critical:
        return Level.CRITICAL
    return Level.WARNING if value > warning else Level.HEALTHY


def below(value: float | None, warning: float) -> Level:
    if value is None:
        return Level.NO_DATA
    return Level.WARNING if value < warning else Level.HEALTHY


@dataclass(frozen=True, slots=True)
class Line:
    section: str
    name: str
    text: str  # the value(s) for people
    level: Level
    note: str = ""
    values: dict[str, float | None] = field(default_factory=dict)  # the same for machines


@dataclass(frozen=True, slots=True)
class Report:
    url: str
    window_s: float | None  # None: cumulative since the server started
    lines: tuple[Line, ...]

    @property
    def overall(self) -> Level:
        worst = max((line.level.severity for line in self.lines), default=0)
        return {0: Level.HEALTHY, 1: Level.WARNING, 2: Level.CRITICAL}[worst]

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "window_s": self.window_s,
            "overall": self.overall.value,
            "lines": [asdict(line) | {"level": line.level.value} for line in self.lines],
        }


def _ms(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds * 1000:.1f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _quantile_line(
    section: str,
    name: str,
    buckets: Sequence[tuple[float, float]],
    count: float,
    limit_s: float,
    judged: bool,
    unjudged: str = "too few queries to judge",
) -> Line:
    p50, p95, p99 = (histogram_quantile(q, buckets) for q in QUANTILES)
    text = f"{_ms(p50)} / {_ms(p95)} / {_ms(p99)} ms"
    level = above(p99, limit_s) if judged else Level.INFO
    note = f"n={count:.0f}" + (f", p99 > {limit_s:g} s" if level is Level.WARNING else "")
    if not judged:
        note += f", {unjudged}"
    return Line(section, name, text, level, note, {"p50_s": p50, "p95_s": p95, "p99_s": p99, "count": count})


def _latency(scrape: Scrape, window_s: float | None, t: Thresholds) -> list[Line]:
    """The whole query (and per route, when there are several), then each step in first-seen order."""
    lines = []
    routes = histogram_buckets(scrape, "rag_query_duration_seconds", by="route")
    every = histogram_buckets(scrape, "rag_query_duration_seconds").get("", [])
    judged = {
        route: window_s is None
        or scrape.total("rag_query_duration_seconds_count", route=route) / window_s >= t.latency_min_qps
        for route in routes
    }
    count = scrape.total("rag_query_duration_seconds_count")
    lines.append(
        _quantile_line("latency", "query p50/p95/p99", every, count, t.latency_p99_s, any(judged.values()))
    )
    if len(routes) > 1:
        for route, buckets in routes.items():
            n = scrape.total("rag_query_duration_seconds_count", route=route)
            lines.append(
                _quantile_line("latency", f"route {route}", buckets, n, t.latency_p99_s, judged[route])
            )
    for step, buckets in histogram_buckets(scrape, "rag_step_duration_seconds", by="step").items():
        n = scrape.total("rag_step_duration_seconds_count", step=step)
        if n > 0 or window_s is None:
            lines.append(_quantile_line("step", step, buckets, n, t.latency_p99_s, any(judged.values())))
    for queue, buckets in histogram_buckets(scrape, "rag_queue_wait_seconds", by="queue").items():
        n = scrape.total("rag_queue_wait_seconds_count", queue=queue)
        if n > 0:  # load, not a dependency's slowness: reported, never judged
            lines.append(
                _quantile_line(
                    "queue", f"{queue} wait", buckets, n, t.latency_p99_s, False, "load, not judged"
                )
            )
    return lines


def _outcomes(scrape: Scrape, window_s: float | None, t: Thresholds) -> list[Line]:
    """Success rate as the availability SLO counts it: status=error over the queries not cancelled."""
    by_status: dict[str, float] = defaultdict(float)
    for labels, value in scrape.series("rag_queries_total"):
        by_status[labels.get("status", "")] += value
    counted = sum(by_status.values()) - by_status["cancelled"]
    success = ratio(sum(by_status[s] for s in ANSWERED), counted)
    error_rate = ratio(by_status["error"], counted)
    detail = ", ".join(f"{k} {v:.0f}" for k, v in sorted(by_status.items()) if v)
    lines = [
        Line(
            "queries",
            "success rate",
            f"{_pct(success)} of {counted:.0f}",
            above(error_rate, t.error_rate_warning, t.error_rate_critical),
            f"{detail}; errors {_pct(error_rate)} (cancelled not counted)",
            {"success_rate": success, "error_rate": error_rate, "queries": counted},
        )
    ]
    if window_s:
        qps = sum(by_status.values()) / window_s
        lines.append(Line("queries", "throughput", f"{qps:.1f} /s", Level.INFO, "", {"qps": qps}))
    return lines


def _cache(scrape: Scrape, window_s: float | None, t: Thresholds) -> list[Line]:
    """Hit rate per level, then answered from any level: (l1 + l2 hits) / l1 lookups (one per query that
    reaches the cache; L2 is looked up after an L1 miss)."""
    hits: dict[str, float] = defaultdict(float)
    lookups: dict[str, float] = defaultdict(float)
    for labels, value in scrape.series("rag_cache_lookups_total"):
        level = labels.get("level", "")
        lookups[level] += value
        hits[level] += value if labels.get("result") == "hit" else 0.0
    lines = [
        Line(
            "cache",
            f"{level} hit rate",
            _pct(ratio(hits[level], lookups[level])),
            Level.INFO,
            f"{hits[level]:.0f} of {lookups[level]:.0f}",
            {"hit_rate": ratio(hits[level], lookups[level])},
        )
        for level in sorted(lookups)
    ]
    any_level = ratio(sum(hits.values()), lookups["l1"])
    judged = window_s is None or lookups["l1"] / window_s >= t.cache_min_lookups_per_s
    lines.append(
        Line(
            "cache",
            "hit rate (any level)",
            _pct(any_level),
            below(any_level, t.cache_hit_ratio_min) if judged else Level.INFO,
            f"warning below {t.cache_hit_ratio_min:.0%}" + ("" if judged else "; too few lookups to judge"),
            {"hit_rate": any_level},
        )
    )
    return lines


def _cost(scrape: Scrape, window_s: float | None, t: Thresholds) -> list[Line]:
    """Money per hour over the window, else since the process started (when the scrape says when)."""
    money = scrape.total("rag_cost_total")
    cpu = scrape.total("rag_cost_cpu_seconds_total")
    queries = scrape.total("rag_queries_total")
    span = window_s
    if span is None and scrape.has("process_start_time_seconds"):
        span = scrape.taken_at - scrape.total("process_start_time_seconds")
    rate = per_hour(money, span)
    since = "in the window" if window_s else "since start"
    per_query = ratio(cpu, queries)
    lines = [
        Line(
            "cost",
            "money per hour" if rate is not None else "money (total)",
            f"{rate:.4g}/h" if rate is not None else f"{money:.6g}",
            above(rate, t.cost_per_hour_max),
            f"{money:.6g} {since}; warning above {t.cost_per_hour_max:g}/h",
            {"per_hour": rate, "total": money},
        ),
        Line(
            "cost",
            "answer CPU per query",
            "–" if per_query is None else f"{per_query * 1000:.2f} ms",
            Level.INFO,
            f"{cpu:.3g} CPU-s {since}, cache hits included",
            {"cpu_s_per_query": per_query, "cpu_s": cpu},
        ),
    ]
    if scrape.has("process_cpu_seconds_total"):  # single-process servers only
        process = ratio(scrape.total("process_cpu_seconds_total"), queries)
        lines.append(
            Line(
                "cost",
                "process CPU per query",
                "–" if process is None else f"{process * 1000:.2f} ms",
                Level.INFO,
                f"the whole server process {since}" + ("" if window_s else ", start-up included"),
                {"cpu_s_per_query": process},
            )
        )
    return lines


def _resilience(scrape: Scrape, t: Thresholds) -> list[Line]:
    """Breakers (any not closed: warning), degradations by step and reason, queries in flight."""
    lines = []
    states: dict[str, str] = {}
    for labels, value in scrape.series("rag_breaker_state"):
        if value == 1:
            states[labels.get("breaker", "?")] = labels.get("state", "?")
    for breaker, state in sorted(states.items()):
        lines.append(Line("breaker", breaker, state, Level.HEALTHY if state == "closed" else Level.WARNING))
    degradations: dict[tuple[str, str], float] = defaultdict(float)
    for labels, value in scrape.series("rag_degradations_total"):
        degradations[(labels.get("step", "?"), labels.get("reason", "?"))] += value
    queries = scrape.total("rag_queries_total")
    for (step, reason), count in sorted(degradations.items(), key=lambda kv: -kv[1]):
        if count > 0:
            share = ratio(count, queries)
            note = f"{_pct(share)} of queries"
            values = {"count": count, "share": share}
            lines.append(Line("degraded", f"{step}: {reason}", f"{count:.0f}", Level.INFO, note, values))
    inflight = scrape.total("rag_inflight_queries") if scrape.has("rag_inflight_queries") else None
    lines.append(
        Line(
            "load",
            "in flight",
            "–" if inflight is None else f"{inflight:.0f}",
            above(inflight, t.inflight_max),
            f"warning above {t.inflight_max:g}",
            {"inflight": inflight},
        )
    )
    return lines


def summarize(
    scrape: Scrape, url: str, *, window_s: float | None = None, thresholds: Thresholds | None = None
) -> Report:
    """The report of one scrape, or of a :func:`window` of two with its length ``window_s``."""
    t = thresholds or alert_thresholds()
    lines = [
        *_latency(scrape, window_s, t),
        *_outcomes(scrape, window_s, t),
        *_cache(scrape, window_s, t),
        *_cost(scrape, window_s, t),
        *_resilience(scrape, t),
    ]
    return Report(url, window_s, tuple(lines))


# -- output -------------------------------------------------------------------------------------------


def render(report: Report) -> str:
    """Aligned plain-text columns: section, name, value, level, note."""
    scope = f"window {report.window_s:g} s" if report.window_s else "cumulative since start"
    header = ("section", "name", "value", "status", "note")
    rows = [header] + [(x.section, x.name, x.text, x.level.value, x.note) for x in report.lines]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    out = [f"rag stats {report.url} ({scope}): {report.overall.value.upper()}", ""]
    for row in rows:
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  " + row[4])
    return "\n".join(line.rstrip() for line in out)


def metrics_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/metrics") else f"{url}/metrics"


def fetch(url: str, *, timeout_s: float = 10.0, token: str | None = None) -> Scrape:
    """One scrape; ``token``: the service's ``RAG_METRICS_TOKEN``, sent as a bearer token."""
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(metrics_url(url), timeout=timeout_s, headers=headers)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise RuntimeError(f"could not scrape {metrics_url(url)}: {exc}") from exc
    return parse_scrape(response.text)


def collect(
    url: str,
    *,
    interval_s: float | None = None,
    thresholds: Thresholds | None = None,
    scrape: Callable[[str], Scrape] = fetch,
    sleep: Callable[[float], None] = time.sleep,
) -> Report:
    """Scrape ``url`` (once, or twice ``interval_s`` apart) and judge it (by default against
    :func:`alert_thresholds`)."""
    if interval_s is not None and interval_s <= 0:
        raise ValueError(f"interval must be greater than 0 s, got {interval_s}")
    first = scrape(url)
    if interval_s is None:
        return summarize(first, url, thresholds=thresholds)
    sleep(interval_s)
    second = scrape(url)
    span = second.taken_at - first.taken_at or interval_s
    return summarize(window(second, first), url, window_s=span, thresholds=thresholds)


def run(url: str, *, interval_s: float | None = None, as_json: bool = False, token: str | None = None) -> int:
    """Print the report (text or JSON). Exit status 0; scrape failures raise ``RuntimeError``."""
    report = collect(url, interval_s=interval_s, scrape=lambda u: fetch(u, token=token))
    print(json.dumps(report.as_dict(), indent=2, ensure_ascii=False) if as_json else render(report))
    return 0
