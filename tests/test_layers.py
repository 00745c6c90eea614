"""Layers point one way: every import in rag/ and api/ goes down (or sideways within a layer), never up.

The table below is the architecture's layering, one line of reason per layer. Each module of ``rag`` and
``api`` belongs to the layer of its longest matching prefix; a module that matches none fails the test, so a
new package is placed on purpose. Every import counts: module level, inside functions, and under
``if TYPE_CHECKING:`` (a type-only import is still a dependency a reader has to follow).

Two kinds of module sit apart from the stack and are named in ``APART``: the offline work (evaluation
harness, reranker training), which only the CLI may start, and ``rag.testing``, the deterministic stand-ins
that production code never imports.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("rag", "api")


@dataclass(frozen=True, slots=True)
class Layer:
    name: str
    prefixes: tuple[str, ...]  # a prefix holds the module of that name and every module below it
    reason: str
    exact: tuple[str, ...] = ()  # modules placed alone (a package's ``__init__``, not what is below it)


# Lowest first. A module may import its own layer and any layer listed before it.
LAYERS: tuple[Layer, ...] = (
    Layer(
        "clients",
        ("rag.clients",),
        "the service's clients (typed HTTP client, LangChain and LlamaIndex retrievers) talk to it over HTTP "
        "only: they import nothing of it, and nothing of it imports them",
    ),
    Layer(
        "base",
        (
            "rag.types",
            "rag.errors",
            "rag.logs",
            "rag.text",
            "rag.fusion",
            "rag.io",
            "rag.tenancy",
            "rag.acl",
            "rag.metrics",
        ),
        "the vocabulary (types, errors, tenancy), metric definitions and pure helpers every layer shares",
        exact=("rag",),
    ),
    Layer(
        "engines",
        ("rag.bm25", "rag.dense", "rag.index", "rag.rerank", "rag.resilience", "rag.cache", "rag.llm"),
        "one component each (an index, a model, a store, a guard): takes values, knows no plan or policy",
    ),
    Layer(
        "retrieval",
        ("rag.retrieval",),
        "runs a given QueryPlan over the engines (the pipeline and its steps); never decides the plan",
    ),
    Layer(
        "policy",
        ("rag.routing", "rag.bandit", "rag.rollout"),
        "decides the plan: analysis, router, budgets, bandit, rollout config, flags and fallback",
    ),
    Layer(
        "settings",
        ("rag.config",),
        "reads the process environment once and hands each component its values; only composition roots "
        "(runtime, offline, service, edges) read it, so a component is built from plain values in a test "
        "and the plan offline is the plan served",
    ),
    Layer(
        "runtime",
        ("rag.runtime", "rag.candidates"),
        "composition root of one collection: settings → stores, models, snapshot and pipeline (and the "
        "candidate collection a new embedder is staged in)",
    ),
    Layer(
        "offline",
        ("rag.offline",),
        "evaluation harness and reranker training: batch jobs over a runtime, never on the request path",
    ),
    Layer(
        "service",
        ("rag.service",),
        "the long-lived process: lifecycle, query handling, caches, cost ledger, ingest jobs",
    ),
    Layer(
        "edges",
        ("api", "rag.cli", "rag.__main__", "rag.ops"),
        "translate the outside (HTTP, command line, a scrape of /metrics) to and from the layers below",
    ),
    Layer(
        "testing",
        ("rag.testing",),
        "deterministic stand-ins and real servers for tests; may use anything, used by no production code",
    ),
)

# Layers whose modules only the named modules may import (besides modules of the layer itself).
APART: Mapping[str, tuple[str, ...]] = {
    "offline": ("rag.cli",),
    "testing": (),
    "clients": (),
}

RANK = {layer.name: rank for rank, layer in enumerate(LAYERS)}


def layer_of(module: str) -> Layer | None:
    """The layer of the longest prefix that matches ``module`` at a dot boundary (None: unplaced)."""
    best: tuple[int, Layer] | None = None
    for layer in LAYERS:
        if module in layer.exact:
            return layer
        for prefix in layer.prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (
                best is None or len(prefix) > best[0]
            ):
                best = (len(prefix), layer)
    return best[1] if best else None


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


@dataclass(frozen=True, slots=True)
class Import:
    line: int
    target: str  # the project module imported (a submodule when ``from pkg import submodule``)


def imports_of(module: str, source: str, *, is_package: bool, known: frozenset[str]) -> Iterator[Import]:
    """Every project import in ``source``, wherever it sits (module level, functions, TYPE_CHECKING)."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] in PACKAGES:
                    yield Import(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            if origin.split(".")[0] not in PACKAGES:
                continue
            for alias in node.names:
                sub = f"{origin}.{alias.name}"
                yield Import(node.lineno, sub if sub in known else origin)


@dataclass(frozen=True, slots=True)
class Violation:
    module: str
    line: int
    target: str
    why: str

    def __str__(self) -> str:
        return f"{self.module}:{self.line} imports {self.target}: {self.why}"


def violations(sources: Mapping[str, tuple[str, bool]]) -> list[Violation]:
    """Upward imports and imports of an apart layer, over ``{module: (source, is_package)}``; one entry
    per (module, line, imported module)."""
    known = frozenset(sources)
    found: dict[Violation, None] = {}
    for module, (source, is_package) in sorted(sources.items()):
        src = layer_of(module)
        assert src is not None, f"{module} is in no layer: add its package to LAYERS in {__file__}"
        for imp in imports_of(module, source, is_package=is_package, known=known):
            dst = layer_of(imp.target)
            if dst is None or dst is src:
                continue
            if dst.name in APART and not any(
                module == m or module.startswith(m + ".") for m in APART[dst.name]
            ):
                allowed = ", ".join(APART[dst.name]) or "no production module"
                found[Violation(module, imp.line, imp.target, f"{dst.name} is apart ({allowed} only)")] = None
            elif RANK[dst.name] > RANK[src.name]:
                found[Violation(module, imp.line, imp.target, f"upward {src.name} → {dst.name}")] = None
    return list(found)


def project_sources() -> dict[str, tuple[str, bool]]:
    return {m: (p.read_text(), p.name == "__init__.py") for m, p in project_modules().items()}


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in project_modules() if layer_of(m) is None)
    assert not unplaced, f"modules in no layer (add them to LAYERS): {unplaced}"


def test_imports_point_down() -> None:
    found = violations(project_sources())
    assert not found, f"{len(found)} import(s) against the layering:\n" + "\n".join(map(str, found))


# The check itself must be able to fail: synthetic modules with each kind of violation.
SYNTHETIC = {
    "rag.types": ("import rag.service.service\n", False),
    "rag.fusion": ("def f():\n    from rag.retrieval import pipeline\n", False),
    "rag.retrieval": ("", True),
    "rag.retrieval.pipeline": (
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..routing.costs import cost_step\n",
        False,
    ),
    "rag.retrieval.plan": ("from rag import config\n", False),
    "rag.routing.costs": ("from rag.retrieval.pipeline import SearchPipeline\n", False),
    "rag.config": ("", False),
    "rag.service.service": (
        "from rag.offline import evaluation\nfrom rag.testing.fakes import FailingEmbedder\n",
        False,
    ),
    "rag.cli": ("from rag.offline.evaluation import evaluate\n", False),
    "rag.offline.evaluation": ("from rag.testing.fakes import FailingEmbedder\n", False),
    "rag.testing.fakes": ("from rag.service.service import RetrievalService\n", False),
    "rag.service": ("", True),
    "rag.offline": ("", True),
    "rag.testing": ("", True),
}


def test_the_check_finds_each_kind_of_violation() -> None:
    found = {(v.module, v.target, v.why) for v in violations(SYNTHETIC)}
    assert found == {
        ("rag.types", "rag.service.service", "upward base → service"),
        ("rag.fusion", "rag.retrieval.pipeline", "upward base → retrieval"),  # inside a function
        (
            "rag.retrieval.pipeline",
            "rag.routing.costs",
            "upward retrieval → policy",
        ),  # relative, TYPE_CHECKING
        ("rag.retrieval.plan", "rag.config", "upward retrieval → settings"),  # ``from pkg import module``
        ("rag.service.service", "rag.offline.evaluation", "offline is apart (rag.cli only)"),
        ("rag.service.service", "rag.testing.fakes", "testing is apart (no production module only)"),
        ("rag.offline.evaluation", "rag.testing.fakes", "testing is apart (no production module only)"),
    }


def test_an_unplaced_module_is_refused() -> None:
    with pytest.raises(AssertionError, match=r"rag\.newthing is in no layer"):
        violations({"rag.newthing": ("", False)})
