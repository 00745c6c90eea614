"""The one config every monitoring artifact is generated from: selector, SLOs, thresholds, windows, links.

Change a number here, run ``python -m monitoring.generate``, commit the regenerated files; CI runs
``python -m monitoring.generate --check`` and fails on a diff (kubernetes-mixin's habit).

Two profiles share the thresholds and differ in time only:

- ``default``: production windows and ``for:`` durations (``monitoring/prometheus/rules.yml``);
- ``fast``: the same alerts with short rate windows and ``for: 0s`` (``rules.fast.yml``), for end-to-end
  tests that scrape a live service every second or so and want an alert within seconds.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Final


class Severity(StrEnum):
    CRITICAL = "critical"  # pages (Alertmanager's pager receiver)
    WARNING = "warning"  # a chat message / ticket


_DURATION = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def seconds(duration: str) -> float:
    """A Prometheus duration (``90s``, ``1h30m``) in seconds; anything else is refused."""
    parts = _DURATION.findall(duration)
    if not parts or "".join(n + u for n, u in parts) != duration:
        raise ValueError(f"{duration!r} is not a Prometheus duration (e.g. 30s, 5m, 1h30m)")
    return sum(int(n) * _UNIT_S[u] for n, u in parts)


@dataclass(frozen=True)
class BurnWindow:
    """One rule of a multiwindow, multi-burn-rate alert (Google SRE workbook, chapter 5): fire when the
    error ratio over both the long and the short window exceeds ``factor`` x the error budget."""

    long: str
    short: str
    factor: float
    severity: Severity
    for_: str

    def __post_init__(self) -> None:
        if seconds(self.short) >= seconds(self.long):
            raise ValueError(f"short window {self.short} must be shorter than the long window {self.long}")
        if self.factor <= 1:
            raise ValueError(f"burn factor must be greater than 1, got {self.factor}")
        seconds(self.for_)


@dataclass(frozen=True)
class Profile:
    """The time side of the rules: rate window, burn-rate windows, ``for:`` per alert."""

    name: str
    rate_window: str  # recording rules and the non-SLO alerts
    background_window: str  # RagBackgroundErrors: a background error counted in this window fires
    burn_windows: tuple[BurnWindow, ...]
    for_: Mapping[str, str]  # alert name -> for duration (RagErrorBudgetBurn: see burn_windows)
    test_interval: str  # spacing of the synthetic series in the promtool tests

    def __post_init__(self) -> None:
        for d in (self.rate_window, self.background_window, self.test_interval, *self.for_.values()):
            seconds(d)
        if seconds(self.rate_window) < 2 * seconds(self.test_interval):
            raise ValueError(f"rate window {self.rate_window} must hold 2 samples at {self.test_interval}")


# alert name -> anchor in docs/runbook.md (the runbook_url pass adds "<runbook_base>#<anchor>")
RUNBOOK_ANCHORS: Final = MappingProxyType(
    {
        "RagHighLatencyP99": "high-latency",
        "RagErrorBudgetBurn": "high-error-rate",
        "RagLowCacheHitRate": "low-cache-hit-rate",
        "RagHighCostRate": "high-cost",
        "RagServiceDown": "service-down",
        "RagHighConcurrency": "high-concurrency",
        "RagBreakerOpenTooLong": "breaker-open",
        "RagBackgroundErrors": "background-errors",
        "RagReplicaVersionsDiffer": "replica-versions",
    }
)

# severity of each alert; RagErrorBudgetBurn's come from its burn windows (page on the fast burn)
SEVERITIES: Final = MappingProxyType(
    {
        "RagHighLatencyP99": Severity.WARNING,  # pages come from the error budget and RagServiceDown
        "RagLowCacheHitRate": Severity.WARNING,
        "RagHighCostRate": Severity.WARNING,
        "RagServiceDown": Severity.CRITICAL,
        "RagHighConcurrency": Severity.WARNING,
        "RagBreakerOpenTooLong": Severity.WARNING,  # answers degrade; the burn rate pages if they fail
        "RagBackgroundErrors": Severity.WARNING,  # the loop went on; shared state may be stale
        "RagReplicaVersionsDiffer": Severity.WARNING,  # each answers whole, from its own version
    }
)

DEFAULT = Profile(
    name="default",
    rate_window="5m",
    background_window="10m",
    burn_windows=(
        BurnWindow("1h", "5m", 14.4, Severity.CRITICAL, for_="2m"),  # 2% of a 30-day budget in 1 h
        BurnWindow("6h", "30m", 6.0, Severity.WARNING, for_="15m"),  # 5% of a 30-day budget in 6 h
    ),
    for_=MappingProxyType(
        {
            "RagHighLatencyP99": "10m",
            "RagLowCacheHitRate": "30m",
            "RagHighCostRate": "15m",
            "RagServiceDown": "2m",
            "RagHighConcurrency": "10m",
            "RagBreakerOpenTooLong": "5m",  # "open too long": not closed for 5 minutes
            "RagBackgroundErrors": "0s",  # one error is news; the 10m window keeps it firing a while
            "RagReplicaVersionsDiffer": "5m",  # a switch takes a second (~20 s at 1M chunks)
        }
    ),
    test_interval="1m",
)

FAST = Profile(
    name="fast",
    rate_window="30s",
    background_window="1m",
    burn_windows=(
        BurnWindow("1m", "30s", 14.4, Severity.CRITICAL, for_="0s"),
        BurnWindow("2m", "1m", 6.0, Severity.WARNING, for_="0s"),
    ),
    for_=MappingProxyType({name: "0s" for name in DEFAULT.for_}),
    test_interval="5s",
)


@dataclass(frozen=True)
class MonitoringConfig:
    # -- what to watch ------------------------------------------------------------------------------------
    job: str = "rag"  # Prometheus scrape job; every query selects job="<job>"
    scrape_target: str = "host.docker.internal:8000"  # docker-compose.monitoring.yml scrapes the host
    scrape_interval: str = "15s"
    # where Prometheus reads the service's RAG_METRICS_TOKEN (a file it can see); None: scrape without one
    scrape_credentials_file: str | None = None
    evaluation_interval: str = "30s"
    alertmanager_target: str = "alertmanager:9093"
    # -- SLOs ---------------------------------------------------------------------------------------------
    availability: float = 0.995  # share of non-cancelled queries not ending in status="error" (30 days)
    latency_p99_s: float = 1.5  # p99 of rag_query_duration_seconds per route
    # -- thresholds ---------------------------------------------------------------------------------------
    latency_min_qps: float = 0.05  # below this a route's p99 is noise: no latency alert
    cache_hit_ratio_min: float = 0.10  # hits (l1 + l2) over l1 lookups (one per query reaching the cache)
    cache_min_lookups_per_s: float = 0.05
    cost_per_hour_max: float = 5.0  # money per hour, the rollout config's currency, all tenants
    inflight_max: int = 32  # rag_inflight_queries per instance
    # -- links and receivers --------------------------------------------------------------------------------
    runbook_base: str = "https://github.com/OWNER/REPO/blob/main/docs/runbook.md"
    pager_webhook: str = "http://pager-webhook:9095/"  # placeholder: a PagerDuty/Opsgenie bridge
    chat_webhook: str = "http://chat-webhook:9096/"  # placeholder: a Slack/Matrix bridge
    grafana_datasource_url: str = "http://prometheus:9090"
    severities: Mapping[str, Severity] = field(default_factory=lambda: SEVERITIES)
    # -- time ---------------------------------------------------------------------------------------------
    profiles: tuple[Profile, ...] = field(default=(DEFAULT, FAST))

    def __post_init__(self) -> None:
        if not 0.9 <= self.availability < 1:
            raise ValueError(f"availability must be in [0.9, 1), got {self.availability}")
        if self.latency_p99_s <= 0:
            raise ValueError(f"latency_p99_s must be greater than 0, got {self.latency_p99_s}")
        if not 0 < self.cache_hit_ratio_min < 1:
            raise ValueError(f"cache_hit_ratio_min must be in (0, 1), got {self.cache_hit_ratio_min}")
        if self.inflight_max < 1:
            raise ValueError(f"inflight_max must be at least 1, got {self.inflight_max}")
        if self.runbook_base.endswith(("#", "/")):
            raise ValueError(f"runbook_base is the runbook page without an anchor, got {self.runbook_base!r}")
        for profile in self.profiles:
            missing = set(RUNBOOK_ANCHORS) - {"RagErrorBudgetBurn"} - set(profile.for_)
            if missing:
                raise ValueError(f"profile {profile.name!r} has no for: duration for {sorted(missing)}")

    @property
    def selector(self) -> str:
        return f'job="{self.job}"'

    @property
    def error_budget(self) -> float:
        return round(1 - self.availability, 10)

    def profile(self, name: str) -> Profile:
        for p in self.profiles:
            if p.name == name:
                return p
        raise ValueError(f"unknown profile {name!r}; choices: {[p.name for p in self.profiles]}")

    def runbook_url(self, alert: str) -> str:
        return f"{self.runbook_base}#{RUNBOOK_ANCHORS[alert]}"


CONFIG: Final = MonitoringConfig()
