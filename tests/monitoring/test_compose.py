"""docker-compose.monitoring.yml parses, mounts files that exist, and agrees with the generated configs."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from monitoring import stack
from tests.monitoring.conftest import MONITORING, REPO

COMPOSE = REPO / "docker-compose.monitoring.yml"


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path of the bind mounts (named volumes left out)."""
    out = {}
    for volume in service.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            out[target] = source
    return out


def test_services_and_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"prometheus", "alertmanager", "grafana"}
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["alertmanager"]["image"].startswith("prom/alertmanager:")
    assert services["grafana"]["image"] == "grafana/grafana:11.6.0"


def test_every_bind_mount_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for target, source in mounts(service).items():
            assert (REPO / source).exists(), f"{name}: {source} (mounted at {target}) does not exist"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith("."):
                assert source in compose["volumes"], f"{name}: undeclared volume {source}"


def test_prometheus_finds_its_rules_and_scrapes_the_host(compose: dict[str, Any]) -> None:
    service = compose["services"]["prometheus"]
    m = mounts(service)
    config = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:  # relative to the config file, so mounted beside it
        assert m[f"/etc/prometheus/{rule_file}"] == f"./monitoring/prometheus/{rule_file}"
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    assert "host.docker.internal:host-gateway" in service["extra_hosts"]
    [rag] = [job for job in config["scrape_configs"] if job["job_name"] == "rag"]
    assert rag["static_configs"][0]["targets"] == ["host.docker.internal:8000"]
    [am] = config["alerting"]["alertmanagers"]
    host = am["static_configs"][0]["targets"][0].split(":")[0]
    assert host in compose["services"]


def test_grafana_mounts_provisioning_and_the_provider_path(compose: dict[str, Any]) -> None:
    m = mounts(compose["services"]["grafana"])
    assert m["/etc/grafana/provisioning"] == "./monitoring/grafana/provisioning"
    assert m[stack.DASHBOARDS_IN_CONTAINER] == "./monitoring/grafana/dashboards"
    datasource = yaml.safe_load((MONITORING / "grafana/provisioning/datasources/prometheus.yml").read_text())[
        "datasources"
    ][0]
    assert datasource["url"].split("//")[1].split(":")[0] in compose["services"]


def test_alertmanager_mounts_its_config(compose: dict[str, Any]) -> None:
    service = compose["services"]["alertmanager"]
    config_path = next(c.split("=", 1)[1] for c in service["command"] if c.startswith("--config.file="))
    assert mounts(service)[config_path] == "./monitoring/alertmanager/alertmanager.yml"
