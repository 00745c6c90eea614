"""One error base: every exception class ``rag`` defines derives from :class:`rag.errors.RagError` (and
keeps its built-in base, so ``except ValueError`` around a parser still catches its error)."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import rag
from rag.errors import RagError

ROOT = Path(rag.__file__).parent
APART = ("rag.testing", "rag.__main__")  # test stand-ins and the entry point define no domain errors


def _modules() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if not name.startswith(APART):
            names.append(name)
    return names


def _exception_classes() -> dict[str, type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for name in _modules():
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                found[f"{name}.{attr}"] = value
    return found


CLIENTS = "rag.clients"  # what callers install to talk to the service: imports none of it (its own base)


def test_every_exception_rag_defines_derives_from_the_one_base() -> None:
    classes = _exception_classes()
    service = {n: c for n, c in classes.items() if not n.startswith(CLIENTS + ".")}
    assert len(service) >= 15, sorted(service)  # the walk found them (RagError and its 14 subclasses today)
    assert sorted(n for n, c in service.items() if not issubclass(c, RagError)) == []


def test_every_exception_of_the_client_derives_from_its_own_base() -> None:
    from rag.clients.errors import RagClientError

    clients = {n: c for n, c in _exception_classes().items() if n.startswith(CLIENTS + ".")}
    assert len(clients) >= 10, sorted(clients)
    assert sorted(n for n, c in clients.items() if not issubclass(c, RagClientError)) == []


def test_a_domain_error_keeps_its_builtin_base() -> None:
    from rag.retrieval.filters import FilterError
    from rag.service.lifecycle import NotReady

    assert issubclass(FilterError, ValueError) and issubclass(NotReady, RuntimeError)
