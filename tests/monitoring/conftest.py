"""Fixtures for the monitoring tests: Debian's promtool, amtool and prometheus (skipped locally when
missing, a failure under CI=true, like the redis fixture), and the metric set ``rag/metrics.py`` exports."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from prometheus_client.metrics import MetricWrapperBase

from rag import metrics
from rag.testing.servers import ProgramMissing, in_ci, require_program

REPO = Path(__file__).resolve().parents[2]
MONITORING = REPO / "monitoring"
PROMETHEUS_DIR = MONITORING / "prometheus"


def need(program: str, package: str) -> str:
    try:
        return require_program(program, package)
    except ProgramMissing as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def promtool() -> str:
    return need("promtool", "prometheus")


@pytest.fixture(scope="session")
def amtool() -> str:
    return need("amtool", "prometheus-alertmanager")


@pytest.fixture(scope="session")
def prometheus_bin() -> str:
    return need("prometheus", "prometheus")


def run(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """Run a tool; the assertion message carries its output."""
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=120)


def exported_labels() -> dict[str, set[str]]:
    """Every series name the service exports (counters with ``_total``, histograms' ``_bucket``,
    ``_sum``, ``_count``) -> its label names, plus Prometheus's own ``up``."""
    out: dict[str, set[str]] = {"up": set()}
    for obj in vars(metrics).values():
        if not isinstance(obj, MetricWrapperBase):
            continue
        labels = set(obj._labelnames)
        for family in obj.describe():
            if family.type == "counter":
                out[f"{family.name}_total"] = labels
            elif family.type == "histogram":
                out[f"{family.name}_bucket"] = labels | {"le"}
                out[f"{family.name}_sum"] = labels
                out[f"{family.name}_count"] = labels
            else:
                out[family.name] = labels
    return out


_SELECTOR = re.compile(r"\b([a-zA-Z_][a-zA-Z0-9_]*)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)\s*"')
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)\s*\((?:rate\()?([a-zA-Z_][a-zA-Z0-9_]*)[{\[]")
TARGET_LABELS = {"job", "instance"}  # added by the scrape


def unknown_references(expr: str, exported: dict[str, set[str]]) -> list[str]:
    """Metric names, matcher labels and grouping labels in ``expr`` that rag/metrics.py does not export."""
    problems = []
    for metric, matchers in _SELECTOR.findall(expr):
        if metric not in exported:
            problems.append(f"metric {metric}")
            continue
        for label in _MATCHER.findall(matchers):
            if label not in exported[metric] | TARGET_LABELS:
                problems.append(f"label {label} on {metric}")
    for labels, metric in _GROUPING.findall(expr):
        for label in (x.strip() for x in labels.split(",") if x.strip()):
            if metric in exported and label not in exported[metric] | TARGET_LABELS:
                problems.append(f"grouping label {label} on {metric}")
    return problems
