"""The README's client examples run as written against a live ``rag serve`` (its URL and key swapped in)."""

from __future__ import annotations

import re

import pytest

from tests.clients.conftest import KEY, REPO, LiveService
from tests.clients.test_retrievers_live import framework

pytestmark = pytest.mark.integration

BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def test_the_readme_client_examples_run(demo_service: LiveService) -> None:
    framework("rag.clients.langchain")
    framework("rag.clients.llamaindex")
    readme = (REPO / "README.md").read_text()
    section = readme.split("### Clients", 1)[1].split("\n## ", 1)[0]
    blocks = BLOCK.findall(section)
    assert len(blocks) == 2
    namespace: dict[str, object] = {}
    for block in blocks:
        code = block.replace("http://localhost:8000", demo_service.url).replace(
            "demo-key-0123456789abcdef", KEY
        )
        exec(compile(code, "README.md", "exec"), namespace)
    assert len(namespace["docs"]) == 5 and len(namespace["nodes"]) == 5  # type: ignore[arg-type]
    namespace["client"].close()  # type: ignore[attr-defined]
