"""Keys bound to a principal (document ACLs): the keys-file suffix `` principal=…`` on every line form,
with and without a pepper; a binding error names the line, never the key; unbound keys are unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from rag.acl import Caller
from rag.service.auth import KeyRing, KeyRingError, Scope, digest, hashed_line, new_key

PEPPER = SecretStr("p" * 32)


def test_each_line_form_may_bind_its_key_to_a_principal(tmp_path: Path) -> None:
    plain, hashed, peppered, legacy = "plain-key-0123456789", new_key(), new_key(), new_key()
    keys = tmp_path / "keys"
    keys.write_text(
        f"acme:{plain} principal=user:alice;groups=eng,ops\n"
        f"acme:{hashed_line(peppered, PEPPER)} principal=user:bob\n"
        f"globex:sha256:{digest(legacy)}  principal=user:carol;groups=x\n"
        f"acme:unbound-key-0123456789\n"
    )
    ring = KeyRing.from_settings(None, keys, None, pepper=PEPPER)
    alice = ring.resolve(plain)
    assert alice is not None and alice.scope is Scope.TENANT and alice.tenant == "acme"
    assert alice.bound == Caller("alice", frozenset({"eng", "ops"}))
    assert ring.resolve(peppered).bound == Caller("bob")  # type: ignore[union-attr]
    carol = ring.resolve(legacy)  # a plain sha256 line under a pepper: rk_ keys, bound all the same
    assert carol is not None and carol.tenant == "globex" and carol.bound == Caller("carol", frozenset({"x"}))
    assert ring.resolve("unbound-key-0123456789").bound is None  # type: ignore[union-attr]
    assert ring.resolve(hashed) is None
    # without a pepper, a sha256 line binds as well
    keys.write_text(f"acme:sha256:{digest(hashed)} principal=user:dan\n")
    assert KeyRing.from_settings(None, keys, None).resolve(hashed).bound == Caller("dan")  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "binding",
    ["principal=alice", "principal=user:", "principal=user:a;groups=", "principal=group:eng", "principal="],
)
def test_a_bad_binding_names_the_line_and_never_the_key(tmp_path: Path, binding: str) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"# comment\nacme:secret-key-0123456789 {binding}\n")
    with pytest.raises(KeyRingError, match=r"keys:2: principal: ") as err:
        KeyRing.from_settings(None, keys, None)
    assert "secret-key" not in str(err.value)


def test_one_key_with_two_principals_is_refused(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("acme:same-key-0123456789 principal=user:a\nacme:same-key-0123456789 principal=user:b\n")
    with pytest.raises(KeyRingError, match="two principals"):
        KeyRing.from_settings(None, keys, None)
    keys.write_text("acme:same-key-0123456789 principal=user:a\nacme:same-key-0123456789\n")
    with pytest.raises(KeyRingError, match="two principals"):  # bound once, unbound once: ambiguous
        KeyRing.from_settings(None, keys, None)
    keys.write_text("acme:same-key-0123456789 principal=user:a\nacme:same-key-0123456789 principal=user:a\n")
    assert KeyRing.from_settings(None, keys, None).resolve("same-key-0123456789").bound == Caller("a")  # type: ignore[union-attr]


def test_the_env_list_binds_a_single_group_binding_too() -> None:
    ring = KeyRing.from_settings("acme:env-key-0123456789 principal=user:eve;groups=ops", None, None)
    assert ring.resolve("env-key-0123456789").bound == Caller("eve", frozenset({"ops"}))  # type: ignore[union-attr]
