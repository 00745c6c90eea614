"""promtool and amtool on the generated files: rules valid, named cases pass, configs valid, routing."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from monitoring import panel_queries
from tests.monitoring.conftest import MONITORING, PROMETHEUS_DIR, run

ALERTMANAGER = str(MONITORING / "alertmanager" / "alertmanager.yml")


@pytest.mark.parametrize("rules", ["rules.yml", "rules.fast.yml"])
def test_promtool_check_rules(promtool: str, rules: str) -> None:
    result = run(promtool, "check", "rules", rules, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize("tests", ["rules.test.yml", "rules.fast.test.yml"])
def test_promtool_test_rules(promtool: str, tests: str) -> None:
    """Every alert's must-fire and must-not-fire cases (named in the test file) pass."""
    result = run(promtool, "test", "rules", tests, cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules_fails_when_a_rule_is_broken(promtool: str, tmp_path: Path) -> None:
    """The cases bite: raise the concurrency threshold and the must-fire case fails."""
    rules = (PROMETHEUS_DIR / "rules.yml").read_text()
    assert "> 32" in rules
    (tmp_path / "rules.yml").write_text(rules.replace("> 32", "> 1000"))
    (tmp_path / "rules.test.yml").write_text((PROMETHEUS_DIR / "rules.test.yml").read_text())
    result = run(promtool, "test", "rules", "rules.test.yml", cwd=tmp_path)
    assert result.returncode != 0
    assert "concurrency: 64 in flight fires" in result.stdout + result.stderr


def test_promtool_check_config(promtool: str) -> None:
    result = run(promtool, "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 rule files found" in result.stdout


def test_every_panel_query_parses(promtool: str, tmp_path: Path) -> None:
    """Each panel's PromQL (variables substituted), as a recording rule, passes promtool's parser."""
    records = [
        {"record": f"panel:q{k}", "expr": expr}
        for k, exprs in enumerate(panel_queries().values())
        for expr in exprs
    ]
    (tmp_path / "panels.yml").write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": records}]}))
    result = run(promtool, "check", "rules", "panels.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_check_config(amtool: str) -> None:
    result = run(amtool, "check-config", ALERTMANAGER)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["alertname=RagServiceDown", "severity=critical"], "pager"),
        (["alertname=RagErrorBudgetBurn", "severity=critical", "window=1h/5m"], "pager"),
        (["alertname=RagLowCacheHitRate", "severity=warning"], "chat"),
        (["alertname=Other"], "chat"),  # no severity: the default receiver
    ],
)
def test_amtool_routes_critical_to_pager_and_warning_to_chat(
    amtool: str, labels: list[str], receiver: str
) -> None:
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_warning_is_inhibited_by_a_critical_of_the_same_alert() -> None:
    config = yaml.safe_load(Path(ALERTMANAGER).read_text())
    assert config["route"]["group_by"] == ["alertname", "severity"]
    [inhibit] = config["inhibit_rules"]
    assert inhibit["source_matchers"] == ['severity="critical"']
    assert inhibit["target_matchers"] == ['severity="warning"']
    assert inhibit["equal"] == ["alertname"]
