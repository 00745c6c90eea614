"""Tenant names are validated over the whole string (issue 12: Python's ``$`` matches before a final
newline, so ``^…$`` with ``re.match`` let "acme\\n" through)."""

from __future__ import annotations

import pytest

from rag.tenancy import check_tenant


@pytest.mark.parametrize("name", ["acme\n", "acme\r\n", "\nacme", "acme\n\n", "acme\x1f"])
def test_a_tenant_with_a_trailing_newline_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="tenant must match"):
        check_tenant(name)


@pytest.mark.parametrize("name", ["", "acme", "a", "acme-corp_2", "x" * 64])
def test_valid_tenants_pass(name: str) -> None:
    assert check_tenant(name) == name


def test_every_python_identifier_check_refuses_a_trailing_newline() -> None:
    """The same ``^…$`` patterns are checked in Python in the filters and the rollout flags."""
    from pydantic import ValidationError

    from rag.retrieval.filters import FilterError, SearchFilter
    from rag.rollout.flags import Flag

    with pytest.raises(FilterError, match="field names must match"):
        SearchFilter.of("acme", {"kind\n": "x"})
    with pytest.raises(ValidationError, match="tenant ids must match"):
        Flag(name="f", allowlist=["acme\n"])
    with pytest.raises(ValidationError, match="variant names must match"):
        Flag(name="f", variants={"on\n": 1.0})
