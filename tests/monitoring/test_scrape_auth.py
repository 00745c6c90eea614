"""The generated Prometheus config scrapes /metrics with the service's RAG_METRICS_TOKEN when the monitoring
config names the file that holds it, and exactly as before when it does not."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml

from monitoring.config import CONFIG
from monitoring.stack import prometheus_config
from tests.monitoring.conftest import run


def rag_job(config: dict) -> dict:  # type: ignore[type-arg]
    return next(job for job in config["scrape_configs"] if job["job_name"] == CONFIG.job)


def test_scrape_sends_the_metrics_token_from_a_file_when_configured(promtool: str, tmp_path: Path) -> None:
    assert "authorization" not in rag_job(prometheus_config(CONFIG))  # the default: unchanged
    cfg = dataclasses.replace(CONFIG, scrape_credentials_file="/etc/prometheus/rag_metrics_token")
    config = prometheus_config(cfg, rule_files=(), alertmanagers=[])
    assert rag_job(config)["authorization"] == {
        "type": "Bearer",
        "credentials_file": "/etc/prometheus/rag_metrics_token",
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    result = run(promtool, "check", "config", "--syntax-only", "prometheus.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
