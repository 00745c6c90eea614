"""The tooling gates what it claims: pre-commit runs exactly `make lint`, and CI runs `make lint` before the
tests, with mypy strict on rag/ and api/."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def make_recipe(target: str) -> list[str]:
    """The commands of a Makefile target, with ``$(BIN)`` expanded to the venv's bin folder."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"{target}:", line))
    recipe = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        recipe.append(line.strip().replace("$(BIN)/", ".venv/bin/"))
    return recipe


def test_pre_commit_runs_the_same_commands_as_make_lint() -> None:
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    (repo,) = config["repos"]
    assert repo["repo"] == "local"  # nothing to download
    hooks = repo["hooks"]
    assert all(h["language"] == "system" and h["pass_filenames"] is False for h in hooks)
    assert [h["entry"] for h in hooks] == make_recipe("lint")


def test_ci_gates_on_lint_before_the_tests() -> None:
    commands = [
        line.strip()
        for line in (REPO / ".ci" / "run").read_text().splitlines()
        if line.strip().startswith("make ")
    ]
    assert commands == ["make lint", "make test"]


def test_mypy_is_strict_on_rag_and_api() -> None:
    mypy = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["mypy"]
    assert mypy["strict"] is True
    assert sorted(mypy["packages"]) == ["api", "rag"]
