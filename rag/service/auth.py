"""API keys → tenants, and the admin token. Keys are kept only as digests.

``RAG_API_KEYS`` holds comma-separated ``tenant:key`` pairs; ``RAG_API_KEYS_FILE`` a file with one
``tenant:key``, ``tenant:sha256:<hex>`` or ``tenant:hmac-sha256:<hex>`` line per key (``#`` comments), so
that a deployment can keep no plaintext key at all (``rag keys new TENANT`` prints a key and its line).

Digests (invariants):

- Without ``RAG_KEY_PEPPER`` every key is known by its SHA-256, as before; ``hmac-sha256:`` lines are refused
  (they cannot be checked without the pepper they were made with).
- With ``RAG_KEY_PEPPER`` every key is known by HMAC-SHA256(pepper, key): a leaked keys file (or a leaked
  process image) without the pepper does not let anyone test guesses, however weak a key is.
  ``sha256:`` lines from before the pepper stay accepted, but only for keys of the ``rk_`` format that
  ``rag keys new`` makes (256 random bits: their plain SHA-256 cannot be searched either); a guessable key
  in a ``sha256:`` line is refused until it is re-issued (``rag keys new`` prints an ``hmac-sha256:`` line).
- No error message ever contains a character of a configured entry (a malformed entry may be a key).

Binding a key to a principal (document ACLs, :mod:`rag.acl`): any of the three forms may end with
`` principal=user:<name>[;groups=<name>,…]`` (after a space), e.g.
``acme:hmac-sha256:<hex> principal=user:alice;groups=eng``. Such a key queries as that principal: a query
without ``X-RAG-Principal`` is that principal's, and a header naming anyone else (another user, or a group
the binding does not hold) is refused (403). In ``RAG_API_KEYS`` the comma separates entries, so a binding
with several groups needs the keys file.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import SecretStr

from rag.acl import AclError, Caller
from rag.errors import RagError
from rag.tenancy import TENANT_PATTERN, check_tenant

log = logging.getLogger(__name__)

KEY_PREFIX = "rk_"
GENERATED_KEY = re.compile(r"rk_[A-Za-z0-9_-]{43}")  # new_key(): 32 random bytes, urlsafe base64
MIN_KEY_CHARS = 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SHA256 = "sha256:"
_HMAC = "hmac-sha256:"
_BINDING = " principal="  # what separates a key (or digest) from the principal it is bound to


def digest(key: str) -> str:
    """Plain SHA-256 (hex) of a key: the ``sha256:`` line format."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def peppered(pepper: SecretStr, key: str) -> str:
    """HMAC-SHA256(pepper, key) (hex): the ``hmac-sha256:`` line format."""
    return hmac.new(
        pepper.get_secret_value().encode("utf-8"), key.encode("utf-8"), hashlib.sha256
    ).hexdigest()


def key_digest(key: str, pepper: SecretStr | None) -> str:
    """What a key is known by: HMAC-SHA256(pepper, key) with a pepper, else its plain SHA-256."""
    return peppered(pepper, key) if pepper is not None else digest(key)


def hashed_line(key: str, pepper: SecretStr | None) -> str:
    """What follows ``tenant:`` in a keys-file line for ``key``: ``hmac-sha256:<hex>`` with a pepper,
    else ``sha256:<hex>``."""
    return f"{_HMAC if pepper is not None else _SHA256}{key_digest(key, pepper)}"


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
    bound: Caller | None = None  # the one caller a bound tenant key queries as (rag.acl)


class KeyRingError(RagError, ValueError):
    pass


class DigestKind(StrEnum):
    PEPPERED = "hmac-sha256"  # HMAC-SHA256(pepper, key), or SHA-256 when no pepper is configured
    LEGACY_SHA256 = "sha256"  # a sha256: line while a pepper is configured: rk_ keys only


@dataclass(frozen=True, slots=True)
class _Entry:
    tenant: str
    digest: str
    kind: DigestKind
    bound: Caller | None = None


def _binding(secret: str, where: str) -> tuple[str, Caller | None]:
    """The key part of ``secret`` and the caller it is bound to (None: not bound). The error names the
    entry and what is wrong with the binding, never a character of the key."""
    key, sep, principal = secret.partition(_BINDING)
    if not sep:
        return secret, None
    try:
        return key.rstrip(), Caller.parse(principal.strip(), field="principal")
    except AclError as exc:
        raise KeyRingError(f"{where}: {exc}") from None


def _parse_entry(entry: str, where: str, pepper: SecretStr | None) -> _Entry:
    """One ``tenant:key``, ``tenant:sha256:<hex>`` or ``tenant:hmac-sha256:<hex>``. The error says which
    entry (``where``) and what is wrong, never any of its characters."""
    forms = "expected 'tenant:key', 'tenant:sha256:<hex>' or 'tenant:hmac-sha256:<hex>'"
    tenant, sep, secret = entry.strip().partition(":")
    if not sep:
        raise KeyRingError(f"{where}: {forms}; the entry has no ':'")
    if not tenant:
        raise KeyRingError(f"{where}: {forms}; the tenant name (before the first ':') is empty")
    try:
        check_tenant(tenant)
    except ValueError:
        raise KeyRingError(
            f"{where}: the tenant name (before the first ':', {len(tenant)} characters) must match "
            f"{TENANT_PATTERN}: lowercase letters, digits, '_' and '-', at most 64"
        ) from None
    secret, bound = _binding(secret, where)
    if not secret:
        raise KeyRingError(f"{where}: {forms}; the key is empty")
    for prefix in (_SHA256, _HMAC):
        if secret.startswith(prefix):
            hexdigest = secret.removeprefix(prefix).lower()
            if not _HEX64.fullmatch(hexdigest):
                raise KeyRingError(f"{where}: {prefix[:-1]} digests are 64 hex characters")
            if prefix == _HMAC:
                if pepper is None:
                    raise KeyRingError(
                        f"{where}: an hmac-sha256 line needs RAG_KEY_PEPPER (the pepper it was made with)"
                    )
                return _Entry(tenant, hexdigest, DigestKind.PEPPERED, bound)
            kind = DigestKind.LEGACY_SHA256 if pepper is not None else DigestKind.PEPPERED
            return _Entry(tenant, hexdigest, kind, bound)
    if len(secret) < MIN_KEY_CHARS:
        raise KeyRingError(f"{where}: keys must be at least {MIN_KEY_CHARS} characters")
    return _Entry(tenant, key_digest(secret, pepper), DigestKind.PEPPERED, bound)


def _reveal(value: SecretStr | str | None) -> str | None:
    return value.get_secret_value() if isinstance(value, SecretStr) else value


class KeyRing:
    """Resolves a presented bearer token to a :class:`Principal`, or None when it is unknown."""

    def __init__(
        self,
        tenant_digests: dict[str, str],
        admin_digest: str | None,
        *,
        pepper: SecretStr | None = None,
        legacy_digests: dict[str, str] | None = None,
        bindings: dict[tuple[DigestKind, str], Caller] | None = None,
    ) -> None:
        self._tenants = dict(tenant_digests)  # digest (peppered, or SHA-256 without a pepper) -> tenant
        self._legacy = dict(legacy_digests or {})  # SHA-256 -> tenant, rk_ keys only (with a pepper)
        self._bound = dict(bindings or {})  # (table, digest) -> the caller a bound key queries as
        self._admin = admin_digest
        self._pepper = pepper

    @classmethod
    def from_settings(
        cls,
        api_keys: SecretStr | str | None,
        api_keys_file: Path | None,
        admin_token: SecretStr | str | None,
        *,
        pepper: SecretStr | None = None,
    ) -> KeyRing:
        entries: list[_Entry] = []
        for n, item in enumerate((_reveal(api_keys) or "").split(","), start=1):
            if item.strip():
                entries.append(_parse_entry(item, f"RAG_API_KEYS entry {n}", pepper))
        if api_keys_file is not None:
            if not api_keys_file.is_file():
                raise KeyRingError(f"RAG_API_KEYS_FILE={str(api_keys_file)!r} does not exist")
            for n, line in enumerate(api_keys_file.read_text().splitlines(), start=1):
                if line.strip() and not line.lstrip().startswith("#"):
                    entries.append(_parse_entry(line, f"{api_keys_file}:{n}", pepper))
        tables: dict[DigestKind, dict[str, str]] = {kind: {} for kind in DigestKind}
        bindings: dict[tuple[DigestKind, str], Caller | None] = {}
        for entry in entries:
            table = tables[entry.kind]
            if entry.digest in table and table[entry.digest] != entry.tenant:
                raise KeyRingError(
                    f"one key is configured for two tenants ({table[entry.digest]!r} and {entry.tenant!r})"
                )
            slot = (entry.kind, entry.digest)
            if slot in bindings and bindings[slot] != entry.bound:
                raise KeyRingError(f"one key of tenant {entry.tenant!r} is configured with two principals")
            table[entry.digest] = entry.tenant
            bindings[slot] = entry.bound
        token = _reveal(admin_token)
        if token is not None and len(token) < MIN_KEY_CHARS:
            raise KeyRingError(f"RAG_ADMIN_TOKEN must be at least {MIN_KEY_CHARS} characters")
        admin = key_digest(token, pepper) if token else None
        if token and (
            admin in tables[DigestKind.PEPPERED] or digest(token) in tables[DigestKind.LEGACY_SHA256]
        ):
            raise KeyRingError("RAG_ADMIN_TOKEN must differ from every tenant key")
        legacy = tables[DigestKind.LEGACY_SHA256]
        if legacy:
            log.warning(
                "%d keys-file line(s) hold a plain sha256 digest while RAG_KEY_PEPPER is set: they accept "
                "only keys made by 'rag keys new' (rk_...); re-issue them with 'rag keys new' for "
                "hmac-sha256 lines",
                len(legacy),
            )
        bound = {slot: caller for slot, caller in bindings.items() if caller is not None}
        return cls(tables[DigestKind.PEPPERED], admin, pepper=pepper, legacy_digests=legacy, bindings=bound)

    @property
    def tenants(self) -> set[str]:
        return set(self._tenants.values()) | set(self._legacy.values())

    @property
    def has_admin(self) -> bool:
        return self._admin is not None

    @property
    def legacy_lines(self) -> int:
        """``sha256:`` lines read while a pepper is configured (each accepts ``rk_`` keys only)."""
        return len(self._legacy)

    def resolve(self, token: str) -> Principal | None:
        d = key_digest(token, self._pepper)
        if self._admin is not None and hmac.compare_digest(d, self._admin):
            return Principal(Scope.ADMIN)
        tenant = self._tenants.get(d)  # a lookup by digest: no timing signal about the key itself
        slot = (DigestKind.PEPPERED, d)
        if tenant is None and self._legacy and GENERATED_KEY.fullmatch(token):
            slot = (DigestKind.LEGACY_SHA256, digest(token))
            tenant = self._legacy.get(slot[1])
        return Principal(Scope.TENANT, tenant, self._bound.get(slot)) if tenant is not None else None
