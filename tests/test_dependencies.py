"""Dependencies: runtime needs only what rag/ and api/ import; requirements.lock pins, with hashes, a version
of every requirement in pyproject.toml (extras included) inside its range; torch is pinned in the Makefile."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
LOCKED_SEPARATELY = {"torch"}  # installed first by the Makefile (local CPU wheel), see scripts/lock.sh


def _project() -> dict[str, Any]:
    project: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project


def _locked() -> dict[str, tuple[Version, int]]:
    """name → (pinned version, number of hashes) from requirements.lock."""
    pins: dict[str, tuple[Version, int]] = {}
    name = ""
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line):
            name = canonicalize_name(match[1])
            pins[name] = (Version(match[2]), 0)
        elif "--hash=sha256:" in line and name:
            pinned, hashes = pins[name]
            pins[name] = (pinned, hashes + 1)
    return pins


def test_rank_bm25_is_a_test_and_benchmark_dependency_only() -> None:
    project = _project()
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert "rank-bm25" not in runtime
    for extra in ("dev", "bench"):
        assert "rank-bm25" in {
            canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"][extra]
        }
    importers = [
        p.relative_to(ROOT).as_posix()
        for folder in ("rag", "api")
        for p in (ROOT / folder).rglob("*.py")
        if re.search(r"^\s*(from|import)\s+rank_bm25\b", p.read_text(), re.MULTILINE)
    ]
    assert importers == []


def test_the_default_embedder_package_is_pinned_to_the_version_whose_digests_are_pinned() -> None:
    from rag.dense.weights import BUNDLED_PACKAGE, BUNDLED_VERSION

    specs = [Requirement(r) for r in _project()["dependencies"]]
    (embedder,) = [r for r in specs if canonicalize_name(r.name) == BUNDLED_PACKAGE]
    assert str(embedder.specifier) == f"=={BUNDLED_VERSION}"


def test_the_lock_pins_every_requirement_of_pyproject_within_its_range_with_hashes() -> None:
    project = _project()
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in project["optional-dependencies"]:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    locked = _locked()
    problems = []
    for req in wanted:
        name = canonicalize_name(req.name)
        if name in LOCKED_SEPARATELY:
            continue
        if name not in locked:
            problems.append(f"{req} is not in requirements.lock (run `make lock`)")
        elif not req.specifier.contains(locked[name][0], prereleases=True):
            problems.append(f"{req}: requirements.lock pins {locked[name][0]} (run `make lock`)")
    assert problems == []
    assert not LOCKED_SEPARATELY & locked.keys()
    assert [name for name, (_, hashes) in locked.items() if hashes == 0] == []


def test_torch_is_pinned_in_the_makefile_as_pyproject_asks() -> None:
    (torch,) = [Requirement(r) for r in _project()["dependencies"] if Requirement(r).name == "torch"]
    match = re.search(r"^TORCH := torch==(\S+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match is not None and torch.specifier.contains(match[1])
