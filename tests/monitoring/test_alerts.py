"""The committed rule files: the alerts, their labels, annotations and runbook links, and test coverage."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml

from monitoring.config import CONFIG, RUNBOOK_ANCHORS
from tests.monitoring.conftest import PROMETHEUS_DIR, REPO, exported_labels, unknown_references

ALERTS = {
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
RULE_FILES = ["rules.yml", "rules.fast.yml"]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((PROMETHEUS_DIR / name).read_text())
    return data


def alert_rules(name: str) -> list[dict[str, Any]]:
    return [r for g in load(name)["groups"] for r in g["rules"] if "alert" in r]


@pytest.mark.parametrize("rules", RULE_FILES)
def test_every_alert_has_severity_summary_and_runbook(rules: str) -> None:
    found = alert_rules(rules)
    assert {r["alert"] for r in found} == set(ALERTS)
    assert len(found) >= 8  # the burn rate has a page and a ticket
    for r in found:
        assert r["labels"]["severity"] in ("critical", "warning"), r["alert"]
        notes = r["annotations"]
        assert notes["summary"].strip() and notes["description"].strip(), r["alert"]
        assert notes["runbook_url"] == f"{CONFIG.runbook_base}#{ALERTS[r['alert']]}", r["alert"]


def test_config_anchors_are_the_runbook_sections() -> None:
    assert dict(RUNBOOK_ANCHORS) == ALERTS


def test_burn_rate_is_multiwindow_multi_burn_rate() -> None:
    burn = {
        r["labels"]["severity"]: r for r in alert_rules("rules.yml") if r["alert"] == "RagErrorBudgetBurn"
    }
    assert set(burn) == {"critical", "warning"}
    page, ticket = burn["critical"]["expr"], burn["warning"]["expr"]
    assert "ratio_rate1h > (14.4 * 0.005)" in page and "ratio_rate5m > (14.4 * 0.005)" in page
    assert "ratio_rate6h > (6 * 0.005)" in ticket and "ratio_rate30m > (6 * 0.005)" in ticket
    assert burn["critical"]["labels"]["window"] == "1h/5m"


def test_severities_page_only_on_budget_burn_and_down() -> None:
    critical = {r["alert"] for r in alert_rules("rules.yml") if r["labels"]["severity"] == "critical"}
    assert critical == {"RagErrorBudgetBurn", "RagServiceDown"}


def test_fast_rules_are_the_same_alerts_with_no_wait() -> None:
    def keys(name: str) -> set[tuple[str, str]]:
        return {(r["alert"], r["labels"]["severity"]) for r in alert_rules(name)}

    assert keys("rules.fast.yml") == keys("rules.yml")
    assert {r["for"] for r in alert_rules("rules.fast.yml")} == {"0s"}
    assert {r["for"] for r in alert_rules("rules.yml")} >= {"2m", "5m", "10m"}


@pytest.mark.parametrize("rules", RULE_FILES)
def test_rule_expressions_use_exported_metrics_and_labels(rules: str) -> None:
    exported = exported_labels()
    recorded = set()
    for group in load(rules)["groups"]:
        for r in group["rules"]:
            assert not unknown_references(r["expr"], exported), r
            if "record" in r:
                recorded.add(r["record"])
            else:  # alerts read recorded series or raw metrics, never a name recorded nowhere
                for name in re.findall(r"\brag:[a-z0-9_:]+", r["expr"]):
                    assert name in recorded, (r["alert"], name)


@pytest.mark.parametrize("tests", ["rules.test.yml", "rules.fast.test.yml"])
def test_every_alert_has_cases_that_must_fire_and_must_not(tests: str) -> None:
    data = load(tests)
    fire: dict[str, int] = {}
    quiet: dict[str, int] = {}
    names = [t["name"] for t in data["tests"]]
    assert len(names) == len(set(names)), "test case names must be unique"
    for test in data["tests"]:
        for check in test["alert_rule_test"]:
            counts = fire if check["exp_alerts"] else quiet
            counts[check["alertname"]] = counts.get(check["alertname"], 0) + 1
    for alert in ALERTS:
        assert fire.get(alert, 0) >= 1, f"{alert}: no must-fire case in {tests}"
        assert quiet.get(alert, 0) >= 1, f"{alert}: no must-not-fire case in {tests}"


def _github_anchors(markdown: str) -> set[str]:
    anchors = set(re.findall(r"""(?:id|name)=["']([^"']+)["']""", markdown))
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", markdown, flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def test_runbook_has_every_anchor() -> None:
    runbook = REPO / "docs" / "runbook.md"
    if not runbook.exists():
        pytest.skip("docs/runbook.md not written yet")
    missing = sorted(set(ALERTS.values()) - _github_anchors(runbook.read_text()))
    assert not missing, f"docs/runbook.md lacks sections for {missing}"


def test_anchor_slugs_follow_github() -> None:
    assert _github_anchors("## High latency\n## breaker-open\n<a id='x-y'></a>") == {
        "high-latency",
        "breaker-open",
        "x-y",
    }
