"""The committed files are exactly what the generator writes; ``--check`` catches a stale one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from monitoring import generate
from monitoring.config import CONFIG, BurnWindow, MonitoringConfig, Severity, seconds
from tests.monitoring.conftest import REPO


def test_committed_files_match_a_fresh_generation() -> None:
    stale = generate.diff(REPO)
    assert not stale, "monitoring files are stale; run `python -m monitoring.generate`:\n" + stale


def test_generation_is_deterministic() -> None:
    assert generate.outputs(CONFIG) == generate.outputs(CONFIG)


def test_check_exits_non_zero_with_a_diff_on_a_stale_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for rel in generate.outputs():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / rel, tmp_path / rel)
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0

    rules = tmp_path / "monitoring/prometheus/rules.yml"
    rules.write_text(rules.read_text().replace("for: 10m", "for: 1h"))
    (tmp_path / "monitoring/grafana/dashboards/rag-service.json").unlink()
    capsys.readouterr()
    assert generate.main(["--check", "--root", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "-        for: 1h" in out and "+        for: 10m" in out
    assert "rag-service.json (generated)" in out

    assert generate.main(["--root", str(tmp_path)]) == 0
    assert generate.main(["--check", "--root", str(tmp_path)]) == 0


def test_every_generated_yaml_file_says_it_is_generated() -> None:
    for rel, text in generate.outputs().items():
        if rel.endswith(".yml"):
            assert text.startswith(generate.HEADER), rel


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"availability": 1.0}, "availability must be in"),
        ({"inflight_max": 0}, "inflight_max must be at least 1"),
        ({"runbook_base": "https://x/runbook.md#"}, "without an anchor"),
    ],
)
def test_config_refuses_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        MonitoringConfig(**kwargs)  # type: ignore[arg-type]


def test_burn_windows_and_durations_are_validated() -> None:
    assert seconds("1h30m") == 5400
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        seconds("5 minutes")
    with pytest.raises(ValueError, match="must be shorter than the long window"):
        BurnWindow("5m", "1h", 14.4, Severity.CRITICAL, "2m")


def test_unknown_profile_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"choices: \['default', 'fast'\]"):
        CONFIG.profile("slow")
