"""API keys → tenants, and the admin token. Keys are kept only as SHA-256 digests.

``RAG_API_KEYS`` holds comma-separated ``tenant:key`` pairs; ``RAG_API_KEYS_FILE`` a file with one
``tenant:key`` or ``tenant:sha256:<hex digest>`` per line (``#`` comments), so that a deployment can keep
no plaintext key at all (``rag keys new TENANT`` prints a key and its file line).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from rag.tenancy import check_tenant

KEY_PREFIX = "rk_"
_SHA256_HEX = 64


def digest(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hint(key: str) -> str:
    """What may appear in logs about a presented key: its length and a digest prefix, never the key."""
    return f"len={len(key)} sha256={digest(key)[:8]}"


class Scope(StrEnum):
    TENANT = "tenant"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Principal:
    scope: Scope
    tenant: str | None = None  # set for tenant keys


class KeyRingError(ValueError):
    pass


def _parse_entry(entry: str, where: str) -> tuple[str, str]:
    """(tenant, digest) of ``tenant:key`` or ``tenant:sha256:<hex>``."""
    tenant, sep, secret = entry.strip().partition(":")
    if not sep or not secret:
        raise KeyRingError(f"{where}: expected 'tenant:key' or 'tenant:sha256:<hex>', got {entry[:20]!r}…")
    try:
        check_tenant(tenant)
    except ValueError as exc:
        raise KeyRingError(f"{where}: {exc}") from None
    if not tenant:
        raise KeyRingError(f"{where}: the tenant name is empty")
    if secret.startswith("sha256:"):
        hexdigest = secret.removeprefix("sha256:").lower()
        if len(hexdigest) != _SHA256_HEX or any(c not in "0123456789abcdef" for c in hexdigest):
            raise KeyRingError(f"{where}: sha256 digests are 64 hex characters")
        return tenant, hexdigest
    if len(secret) < 16:
        raise KeyRingError(f"{where}: keys must be at least 16 characters (tenant {tenant!r})")
    return tenant, digest(secret)


class KeyRing:
    """Resolves a presented bearer token to a :class:`Principal`, or None when it is unknown."""

    def __init__(self, tenant_digests: dict[str, str], admin_digest: str | None) -> None:
        self._tenants = dict(tenant_digests)  # digest -> tenant
        self._admin = admin_digest

    @classmethod
    def from_settings(
        cls, api_keys: str | None, api_keys_file: Path | None, admin_token: str | None
    ) -> KeyRing:
        entries: list[tuple[str, str]] = []
        for n, item in enumerate((api_keys or "").split(","), start=1):
            if item.strip():
                entries.append(_parse_entry(item, f"RAG_API_KEYS entry {n}"))
        if api_keys_file is not None:
            if not api_keys_file.is_file():
                raise KeyRingError(f"RAG_API_KEYS_FILE={str(api_keys_file)!r} does not exist")
            for n, line in enumerate(api_keys_file.read_text().splitlines(), start=1):
                if line.strip() and not line.lstrip().startswith("#"):
                    entries.append(_parse_entry(line, f"{api_keys_file}:{n}"))
        digests: dict[str, str] = {}
        for tenant, d in entries:
            if d in digests and digests[d] != tenant:
                raise KeyRingError(f"one key is configured for two tenants ({digests[d]!r} and {tenant!r})")
            digests[d] = tenant
        if admin_token is not None and len(admin_token) < 16:
            raise KeyRingError("RAG_ADMIN_TOKEN must be at least 16 characters")
        admin = digest(admin_token) if admin_token else None
        if admin is not None and admin in digests:
            raise KeyRingError("RAG_ADMIN_TOKEN must differ from every tenant key")
        return cls(digests, admin)

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants.values())

    @property
    def has_admin(self) -> bool:
        return self._admin is not None

    def resolve(self, token: str) -> Principal | None:
        d = digest(token)
        if self._admin is not None and hmac.compare_digest(d, self._admin):
            return Principal(Scope.ADMIN)
        tenant = self._tenants.get(d)  # a lookup by digest: no timing signal about the key itself
        return Principal(Scope.TENANT, tenant) if tenant is not None else None
