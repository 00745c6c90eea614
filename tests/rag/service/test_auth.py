"""API keys → tenants, kept hashed; the admin token; configuration errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from rag.service.auth import (
    KeyRing,
    KeyRingError,
    Principal,
    Scope,
    digest,
    hashed_line,
    key_hint,
    new_key,
)


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
        ("Acme Corp:key-0123456789abcdef", None, "tenant name .* must match"),
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


SECRET_LOOKING = "Zq9xSECRETxW7v"


@pytest.mark.parametrize(
    ("entry", "what"),
    [
        (SECRET_LOOKING + "0123456789", "no ':'"),  # a bare key, no tenant
        (SECRET_LOOKING + "0123456789:acme", "tenant name"),  # key and tenant swapped
        ("acme:", "the key is empty"),
        ("acme:" + SECRET_LOOKING[:8], "at least 16 characters"),
        ("acme:sha256:" + SECRET_LOOKING, "64 hex characters"),
    ],
)
def test_a_malformed_api_keys_entry_is_never_echoed(entry: str, what: str) -> None:
    with pytest.raises(KeyRingError) as error:
        KeyRing.from_settings(f"globex:globex-key-0123456789,{entry}", None, None)
    message = str(error.value)
    assert "RAG_API_KEYS entry 2" in message and what in message
    windows = {entry[i : i + 4] for i in range(len(entry) - 3)} - {"acme", "sha2", "ha25", "a256"}
    assert not [w for w in windows if w in message], message


PEPPER = SecretStr("pepper-0123456789-0123456789-0123456789")


def test_with_a_pepper_digests_are_hmacs_and_hmac_lines_resolve(tmp_path: Path) -> None:
    key = new_key()
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"globex:{hashed_line(key, PEPPER)}\n")
    assert hashed_line(key, PEPPER).startswith("hmac-sha256:")
    assert hashed_line(key, PEPPER).removeprefix("hmac-sha256:") != digest(key)  # not the plain hash
    ring = KeyRing.from_settings(
        "acme:acme-key-0123456789", keys_file, SecretStr("admin-token-0123456789"), pepper=PEPPER
    )
    assert ring.resolve(key) == Principal(Scope.TENANT, "globex")
    assert ring.resolve("acme-key-0123456789") == Principal(Scope.TENANT, "acme")
    assert ring.resolve("admin-token-0123456789") == Principal(Scope.ADMIN)
    assert digest("acme-key-0123456789") not in repr(vars(ring))  # kept as HMACs, not plain SHA-256
    other = KeyRing.from_settings(None, keys_file, None, pepper=SecretStr("another-pepper-0123456789-012345"))
    assert other.resolve(key) is None  # a digest is useless without its pepper


def test_hmac_lines_without_the_pepper_are_refused_with_the_reason(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"globex:{hashed_line(new_key(), PEPPER)}\n")
    with pytest.raises(KeyRingError, match=r"keys:1: .*hmac-sha256.* needs RAG_KEY_PEPPER"):
        KeyRing.from_settings(None, keys_file, None)


def test_plain_sha256_lines_keep_working_and_with_a_pepper_only_for_generated_keys(tmp_path: Path) -> None:
    generated, weak = new_key(), "a-weak-but-long-password"
    keys_file = tmp_path / "keys"
    keys_file.write_text(f"acme:sha256:{digest(generated)}\nglobex:sha256:{digest(weak)}\n")
    without = KeyRing.from_settings(None, keys_file, None)  # as before: any key in a sha256 line
    assert without.resolve(generated) == Principal(Scope.TENANT, "acme")
    assert without.resolve(weak) == Principal(Scope.TENANT, "globex")
    peppered = KeyRing.from_settings(None, keys_file, None, pepper=PEPPER)
    assert peppered.resolve(generated) == Principal(Scope.TENANT, "acme")  # 256 random bits: safe
    assert peppered.resolve(weak) is None  # a guessable key must be re-issued as an HMAC line
    assert peppered.legacy_lines == 2
