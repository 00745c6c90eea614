"""Prometheus rule groups: the recording rules and the alerts, with labels, annotations and runbook links.

The conditions come from :mod:`monitoring.promql`; this module adds what a human reads. Runbook links
are added in one pass (:func:`with_runbooks`) from ``config.RUNBOOK_ANCHORS``, so an alert without an
anchor fails generation instead of shipping without a link.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from monitoring import promql
from monitoring.config import RUNBOOK_ANCHORS, MonitoringConfig, Profile, Severity, seconds
from monitoring.promql import num

_NO_LABELS: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    labels: Mapping[str, str] = field(default_factory=lambda: _NO_LABELS)  # beyond severity
    runbook_url: str = ""

    @property
    def all_labels(self) -> dict[str, str]:
        return {"severity": self.severity.value, **self.labels}

    @property
    def annotations(self) -> dict[str, str]:
        return {"summary": self.summary, "description": self.description, "runbook_url": self.runbook_url}

    def as_rule(self) -> dict[str, Any]:
        return {
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": self.all_labels,
            "annotations": self.annotations,
        }


def _budget_hours(factor: float) -> str:
    return f"{30 * 24 / factor:.0f} h"


def _pct(x: float) -> str:
    return f"{x * 100:.10g}%"


def alerts(cfg: MonitoringConfig, p: Profile) -> list[Alert]:
    """The alerts of one profile, without runbook links (see :func:`with_runbooks`)."""
    w, sev = p.rate_window, cfg.severities
    out = [
        Alert(
            "RagHighLatencyP99",
            promql.latency_alert(cfg, p),
            p.for_["RagHighLatencyP99"],
            sev["RagHighLatencyP99"],
            summary=f"p99 query latency above {num(cfg.latency_p99_s)} s on route {{{{ $labels.route }}}}",
            description=(
                f"The p99 of rag_query_duration_seconds over {w} has stayed above the "
                f"{num(cfg.latency_p99_s)} s SLO target for {p.for_['RagHighLatencyP99']} on route "
                f"{{{{ $labels.route }}}} (more than {num(cfg.latency_min_qps)} queries/s). "
                "The dashboard's latency-by-step panel shows which step is slow."
            ),
        )
    ]
    for b in p.burn_windows:
        out.append(
            Alert(
                "RagErrorBudgetBurn",
                promql.burn_alert(cfg, b),
                b.for_,
                b.severity,
                summary=f"Error budget burning {num(b.factor)}x too fast ({b.long} and {b.short} windows)",
                description=(
                    f"Over both the last {b.long} and {b.short}, more than "
                    f"{num(b.factor * cfg.error_budget)} of the non-cancelled queries ended in status=error "
                    f"({num(b.factor)}x the {num(cfg.error_budget)} error budget of the "
                    f"{_pct(cfg.availability)} availability SLO): at this rate a 30-day budget is gone "
                    f"in {_budget_hours(b.factor)}."
                ),
                labels=MappingProxyType({"window": f"{b.long}/{b.short}"}),
            )
        )
    out += [
        Alert(
            "RagLowCacheHitRate",
            promql.cache_alert(cfg, p),
            p.for_["RagLowCacheHitRate"],
            sev["RagLowCacheHitRate"],
            summary=f"Query cache hit ratio below {_pct(cfg.cache_hit_ratio_min)}",
            description=(
                f"Cache hits (l1 + l2) over l1 lookups, over {w}, have stayed below "
                f"{_pct(cfg.cache_hit_ratio_min)} for {p.for_['RagLowCacheHitRate']} at more than "
                f"{num(cfg.cache_min_lookups_per_s)} lookups/s: queries are computed instead of served "
                "from the cache, so cost and latency go up."
            ),
        ),
        Alert(
            "RagHighCostRate",
            promql.cost_alert(cfg, p),
            p.for_["RagHighCostRate"],
            sev["RagHighCostRate"],
            summary=f"Spend above {num(cfg.cost_per_hour_max)} per hour",
            description=(
                f"rag_cost_total (all tenants, the rollout config's currency) has grown faster than "
                f"{num(cfg.cost_per_hour_max)} per hour over {w} for {p.for_['RagHighCostRate']}. "
                "The dashboard's cost panels split it by step and by tenant."
            ),
        ),
        Alert(
            "RagServiceDown",
            promql.down_alert(cfg),
            p.for_["RagServiceDown"],
            sev["RagServiceDown"],
            summary=f"RAG service down: {cfg.selector} not scraped",
            description=(
                f"Prometheus has failed to scrape {cfg.selector} (up == 0), or has no such target at all, "
                f"for {p.for_['RagServiceDown']}."
            ),
        ),
        Alert(
            "RagHighConcurrency",
            promql.concurrency_alert(cfg),
            p.for_["RagHighConcurrency"],
            sev["RagHighConcurrency"],
            summary=f"More than {cfg.inflight_max} queries in flight on {{{{ $labels.instance }}}}",
            description=(
                f"rag_inflight_queries on {{{{ $labels.instance }}}} has stayed above {cfg.inflight_max} "
                f"for {p.for_['RagHighConcurrency']}: queries are piling up (a slow dependency, or more "
                "traffic than the instance can take)."
            ),
        ),
        Alert(
            "RagBreakerOpenTooLong",
            promql.breaker_alert(cfg),
            p.for_["RagBreakerOpenTooLong"],
            sev["RagBreakerOpenTooLong"],
            summary=f"Breaker {{{{ $labels.breaker }}}} not closed for {p.for_['RagBreakerOpenTooLong']}",
            description=(
                "The {{ $labels.breaker }} circuit breaker has been open or half-open at every "
                f"evaluation for {p.for_['RagBreakerOpenTooLong']}: calls to that dependency are refused "
                "and answers are degraded (or fail)."
            ),
        ),
        Alert(
            "RagBackgroundErrors",
            promql.background_errors_alert(cfg, p),
            p.for_["RagBackgroundErrors"],
            sev["RagBackgroundErrors"],
            summary="Background loop {{ $labels.loop }} counting errors on {{ $labels.instance }}",
            description=(
                'rag_background_errors_total{loop="{{ $labels.loop }}"} on {{ $labels.instance }} has '
                f"grown in the last {p.background_window}: the {{{{ $labels.loop }}}} loop logged an error "
                "or a malformed value, skipped it and went on, so the state it keeps in step (breakers, "
                "spend, rollout config or bandit state, shared through Redis or a file) may be stale. "
                "The service's JSON log lines name the loop and the problem."
            ),
        ),
        Alert(
            "RagReplicaVersionsDiffer",
            promql.replica_versions_alert(cfg),
            p.for_["RagReplicaVersionsDiffer"],
            sev["RagReplicaVersionsDiffer"],
            summary=f"Replicas of {{{{ $labels.job }}}} on different index versions for "
            f"{p.for_['RagReplicaVersionsDiffer']}",
            description=(
                "rag_index_version differs between the instances (or workers) of {{ $labels.job }} "
                f"for {p.for_['RagReplicaVersionsDiffer']}: some process is not following the published "
                "version (a switch that keeps failing, a stuck process). Each still answers whole from "
                "its own version; GET /admin/index lists which replica serves what."
            ),
        ),
    ]
    return out


def with_runbooks(cfg: MonitoringConfig, items: list[Alert]) -> list[Alert]:
    """The one pass that links every alert to its runbook section."""
    missing = sorted({a.name for a in items} - set(RUNBOOK_ANCHORS))
    if missing:
        raise ValueError(f"alerts without a runbook anchor in config.RUNBOOK_ANCHORS: {missing}")
    return [replace(a, runbook_url=cfg.runbook_url(a.name)) for a in items]


def linked_alerts(cfg: MonitoringConfig, p: Profile) -> list[Alert]:
    return with_runbooks(cfg, alerts(cfg, p))


def rule_groups(cfg: MonitoringConfig, p: Profile) -> dict[str, Any]:
    """The rule file's content. Recording rules come first: promtool and Prometheus evaluate groups in
    order, so the alerts read series recorded at the same evaluation."""
    recording = [{"record": name, "expr": expr} for name, expr in promql.recording_rules(cfg, p).items()]
    return {
        "groups": [
            {"name": "rag.recording", "rules": recording},
            {"name": "rag.alerts", "rules": [a.as_rule() for a in linked_alerts(cfg, p)]},
        ]
    }


_LABEL_REF = re.compile(r"\{\{ \$labels\.([a-zA-Z_]\w*) \}\}")


def render(template: str, labels: Mapping[str, str]) -> str:
    """What Prometheus makes of an annotation for a series with these labels (the only template form
    used here is ``{{ $labels.NAME }}``); the promtool tests expect the rendered text."""
    out = _LABEL_REF.sub(lambda m: labels.get(m.group(1), ""), template)
    if "{{" in out:
        raise ValueError(f"unsupported template in {template!r}")
    return out


def longest_for(p: Profile) -> float:
    return max(seconds(d) for d in [*p.for_.values(), *(b.for_ for b in p.burn_windows)])
