"""Configs of the stack around the rules and the dashboard: Prometheus, Alertmanager, Grafana provisioning.

The functions take what differs between the compose stack and a test (targets, rule files, receivers)
as arguments with the config's values as defaults, so an end-to-end test can write its own files::

    prometheus_config(CONFIG, targets=["127.0.0.1:8123"], rule_files=[".../rules.fast.yml"],
                      scrape_interval="1s", evaluation_interval="1s", alertmanagers=["127.0.0.1:9093"])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from monitoring.config import MonitoringConfig, Severity

DASHBOARDS_IN_CONTAINER = "/etc/grafana/dashboards/rag"  # docker-compose.monitoring.yml mounts them here


def prometheus_config(
    cfg: MonitoringConfig,
    *,
    targets: Sequence[str] | None = None,
    rule_files: Sequence[str] = ("rules.yml",),
    scrape_interval: str | None = None,
    evaluation_interval: str | None = None,
    alertmanagers: Sequence[str] | None = None,
    self_target: str | None = "localhost:9090",
) -> dict[str, Any]:
    """``rule_files`` are relative to the config file's folder (Prometheus and promtool resolve them so);
    ``self_target`` is Prometheus's own address (scraped as job "prometheus"; None: not scraped)."""
    ams = [cfg.alertmanager_target] if alertmanagers is None else list(alertmanagers)
    out: dict[str, Any] = {
        "global": {
            "scrape_interval": scrape_interval or cfg.scrape_interval,
            "evaluation_interval": evaluation_interval or cfg.evaluation_interval,
        },
        "rule_files": list(rule_files),
    }
    if ams:
        out["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": ams}]}]}
    rag_job: dict[str, Any] = {
        "job_name": cfg.job,
        "metrics_path": "/metrics",
        "static_configs": [{"targets": list(targets or [cfg.scrape_target])}],
    }
    if cfg.scrape_credentials_file:  # the service's RAG_METRICS_TOKEN, as a bearer token
        rag_job["authorization"] = {"type": "Bearer", "credentials_file": cfg.scrape_credentials_file}
    out["scrape_configs"] = [rag_job]
    if self_target:
        out["scrape_configs"].append(
            {"job_name": "prometheus", "static_configs": [{"targets": [self_target]}]}
        )
    return out


def alertmanager_config(
    cfg: MonitoringConfig,
    *,
    pager_url: str | None = None,
    chat_url: str | None = None,
    group_wait: str = "30s",
    group_interval: str = "5m",
    repeat_interval: str = "4h",
) -> dict[str, Any]:
    """Critical alerts page, warnings go to chat; both are webhooks (placeholders in the config: point them
    at a PagerDuty/Opsgenie and a Slack/Matrix bridge, or swap in Alertmanager's native receivers). A
    warning is muted while a critical alert of the same name fires (the burn rate's ticket under its page)."""
    return {
        "global": {"resolve_timeout": "5m"},
        "route": {
            "receiver": "chat",
            "group_by": ["alertname", "severity"],
            "group_wait": group_wait,
            "group_interval": group_interval,
            "repeat_interval": repeat_interval,
            "routes": [
                {
                    "matchers": [f'severity="{Severity.CRITICAL}"'],
                    "receiver": "pager",
                    "repeat_interval": "1h",
                },
                {"matchers": [f'severity="{Severity.WARNING}"'], "receiver": "chat"},
            ],
        },
        "inhibit_rules": [
            {
                "source_matchers": [f'severity="{Severity.CRITICAL}"'],
                "target_matchers": [f'severity="{Severity.WARNING}"'],
                "equal": ["alertname"],
            }
        ],
        "receivers": [
            {
                "name": "pager",
                "webhook_configs": [{"url": pager_url or cfg.pager_webhook, "send_resolved": True}],
            },
            {
                "name": "chat",
                "webhook_configs": [{"url": chat_url or cfg.chat_webhook, "send_resolved": True}],
            },
        ],
    }


def grafana_datasource(cfg: MonitoringConfig) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": "prometheus",
                "type": "prometheus",
                "access": "proxy",
                "url": cfg.grafana_datasource_url,
                "isDefault": True,
                "editable": False,
                # $__rate_interval is at least 4 x this: keep it the scrape interval
                "jsonData": {"timeInterval": cfg.scrape_interval},
            }
        ],
    }


def grafana_dashboard_provider() -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "rag",
                "folder": "RAG",
                "type": "file",
                "disableDeletion": True,
                "allowUiUpdates": False,
                "updateIntervalSeconds": 30,
                "options": {"path": DASHBOARDS_IN_CONTAINER, "foldersFromFilesStructure": False},
            }
        ],
    }
