"""API keys → tenants, kept hashed; the admin token; configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.service.auth import KeyRing, KeyRingError, Scope, digest, key_hint, new_key


def test_keys_resolve_to_their_tenant_and_only_digests_are_kept(tmp_path: Path) -> None:
    hashed_key = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"# tenants\nglobex:sha256:{digest(hashed_key)}\n\n")
    ring = KeyRing.from_settings("acme:acme-key-0123456789", keys_file, "admin-token-0123456789")
    assert ring.resolve("acme-key-0123456789").tenant == "acme"  # type: ignore[union-attr]
    assert ring.resolve(hashed_key).tenant == "globex"  # type: ignore[union-attr]
    assert ring.resolve("admin-token-0123456789").scope is Scope.ADMIN  # type: ignore[union-attr]
    assert ring.resolve("nope") is None
    assert "acme-key-0123456789" not in repr(vars(ring))
    assert ring.tenants == {"acme", "globex"}


@pytest.mark.parametrize(
    ("api_keys", "admin", "message"),
    [
        ("acme", None, "expected 'tenant:key'"),
        ("Acme Corp:key-0123456789abcdef", None, "tenant must match"),
        ("acme:short", None, "at least 16 characters"),
        ("acme:sha256:abc", None, "64 hex characters"),
        ("a:same-key-0123456789,b:same-key-0123456789", None, "two tenants"),
        ("a:key-0123456789abcdef", "short", "RAG_ADMIN_TOKEN must be at least 16"),
        ("a:key-0123456789abcdef", "key-0123456789abcdef", "must differ"),
    ],
)
def test_bad_key_configuration_is_refused_with_the_reason(
    api_keys: str, admin: str | None, message: str
) -> None:
    with pytest.raises(KeyRingError, match=message):
        KeyRing.from_settings(api_keys, None, admin)


def test_key_hints_never_contain_the_key() -> None:
    key = new_key()
    assert key not in key_hint(key) and key_hint(key).startswith(f"len={len(key)} ")
