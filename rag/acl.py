"""Document-level access control inside a tenant: the vocabulary (entries, callers, scopes).

A document may carry an ACL, a list of entries ``user:<name>`` and ``group:<name>``; a query names its
caller (``X-RAG-Principal: user:alice;groups=eng,ops``, or the principal its key is bound to). The caller
sees a document when the document's ACL names the caller's user or one of its groups; a document with no
ACL is seen per the tenant's default (:class:`AclDefault`: ``public`` or ``deny``).

Invariants (fail closed):

- An ACL is never empty: ``[]`` is refused at ingest (it reads as "nobody" to one client and as "no
  restriction" to another); leave the field out for the tenant default.
- A query without a caller is *anonymous*: it sees the documents with no ACL when the default is
  ``public``, and nothing else. Never a document with an ACL.
- :meth:`AccessScope.allows` is the one rule; the row mask, the Qdrant payload filter and the check of
  every served result (rag.retrieval.filters) all implement it.
- Names are case-sensitive and bounded; an entry is ``kind:name`` with nothing to normalise, so the
  same entry has one spelling everywhere (ACL, header, keys file, cache key).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from rag.errors import RagError

PRINCIPAL_HEADER = "X-RAG-Principal"
MAX_ACL_ENTRIES = 64  # per document
MAX_GROUPS = 32  # per caller
MAX_NAME_CHARS = 128
MAX_PRINCIPAL_CHARS = 8 + MAX_NAME_CHARS + 8 + MAX_GROUPS * (MAX_NAME_CHARS + 1)  # fits the longest valid
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$"
ENTRY_PATTERN = r"^(user|group):[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$"
_NAME_RE = re.compile(NAME_PATTERN)
_ENTRY_RE = re.compile(ENTRY_PATTERN)
USER, GROUP = "user:", "group:"


class AclError(RagError, ValueError):
    """An ACL or a principal of the wrong shape; ``field`` names it (``acl``, ``X-RAG-Principal``) and
    ``limit`` the bound it broke, when one did."""

    def __init__(self, field: str, message: str, limit: int | str | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.limit = limit


class AclDefault(StrEnum):
    """Who sees a document that has no ACL."""

    PUBLIC = "public"  # every caller of the tenant, anonymous ones too
    DENY = "deny"  # nobody

    @classmethod
    def from_str(cls, value: str, where: str = "acl default") -> AclDefault:
        try:
            return cls(value)
        except ValueError:
            raise ValueError(f"{where}: expected one of {[d.value for d in cls]}, got {value!r}") from None


def check_acl(values: Any, field: str = "acl") -> tuple[str, ...]:
    """``values`` as a document's ACL: sorted, without duplicates. Raises :class:`AclError` for anything
    but a non-empty list of at most ``MAX_ACL_ENTRIES`` entries matching ``ENTRY_PATTERN``."""
    if not isinstance(values, list | tuple):
        raise AclError(
            field, f"must be a list of 'user:<name>' / 'group:<name>', got {type(values).__name__}"
        )
    if not values:
        raise AclError(
            field, "an empty ACL would hide the document from everyone; leave the field out for the default"
        )
    if len(values) > MAX_ACL_ENTRIES:
        raise AclError(field, f"at most {MAX_ACL_ENTRIES} entries, got {len(values)}", MAX_ACL_ENTRIES)
    for value in values:
        if not isinstance(value, str) or not _ENTRY_RE.fullmatch(value):
            shown = value[:40] if isinstance(value, str) else type(value).__name__
            raise AclError(field, f"entries must match {ENTRY_PATTERN}, got {shown!r}", ENTRY_PATTERN)
    return tuple(sorted(set(values)))


@dataclass(frozen=True, slots=True)
class Caller:
    """Who a query is for: one user and the groups it belongs to (the caller's application asserts it)."""

    user: str
    groups: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, header: str, field: str = PRINCIPAL_HEADER) -> Caller:
        """``user:<name>`` optionally followed by ``;groups=<name>,<name>…`` (spaces around the separators
        are allowed). Raises :class:`AclError` naming ``field`` and the limit broken."""
        if len(header) > MAX_PRINCIPAL_CHARS:
            raise AclError(
                field, f"at most {MAX_PRINCIPAL_CHARS} characters, got {len(header)}", MAX_PRINCIPAL_CHARS
            )
        form = "expected 'user:<name>' or 'user:<name>;groups=<name>,<name>'"
        user_part, sep, rest = header.strip().partition(";")
        user_part = user_part.strip()
        if not user_part.startswith(USER) or not _NAME_RE.fullmatch(user_part[len(USER) :]):
            raise AclError(field, f"{form}; names match {NAME_PATTERN}", NAME_PATTERN)
        groups: set[str] = set()
        if sep:
            key, eq, listed = rest.strip().partition("=")
            if key.strip() != "groups" or not eq:
                raise AclError(field, f"{form}; after ';' only 'groups=' is allowed")
            names = [g.strip() for g in listed.split(",")]
            if len(names) > MAX_GROUPS:
                raise AclError(field, f"at most {MAX_GROUPS} groups, got {len(names)}", MAX_GROUPS)
            for name in names:
                if not _NAME_RE.fullmatch(name):
                    raise AclError(field, f"{form}; group names match {NAME_PATTERN}", NAME_PATTERN)
            groups = set(names)
        return cls(user_part[len(USER) :], frozenset(groups))

    @property
    def entries(self) -> frozenset[str]:
        """The ACL entries that name this caller."""
        return frozenset({USER + self.user, *(GROUP + g for g in self.groups)})

    def within(self, bound: Caller) -> bool:
        """Whether this caller is ``bound`` or ``bound`` with fewer groups (it sees no more than it)."""
        return self.user == bound.user and self.groups <= bound.groups

    def __str__(self) -> str:
        return USER + self.user + (f";groups={','.join(sorted(self.groups))}" if self.groups else "")


@dataclass(frozen=True, slots=True)
class AccessScope:
    """What one query may see: the caller's entries (empty: anonymous) and the tenant's default for
    documents with no ACL."""

    entries: frozenset[str]
    unlisted: AclDefault

    @classmethod
    def of(cls, caller: Caller | None, default: AclDefault) -> AccessScope:
        return cls(caller.entries if caller is not None else frozenset(), default)

    def allows(self, acl: Iterable[str]) -> bool:
        """The rule: a listed document when its ACL names one of the caller's entries; an unlisted one
        (no ACL) per the default."""
        listed = tuple(acl)
        if not listed:
            return self.unlisted is AclDefault.PUBLIC
        return not self.entries.isdisjoint(listed)

    @property
    def key(self) -> str:
        """A digest of the scope: what cached answers computed under it are keyed by (two callers with the
        same entries and default share answers; any other difference is another key)."""
        canonical = json.dumps({"entries": sorted(self.entries), "unlisted": self.unlisted.value})
        return hashlib.blake2b(canonical.encode(), digest_size=12).hexdigest()


def tenant_defaults(text: str | None) -> dict[str, AclDefault]:
    """``tenant=public|deny`` pairs, comma-separated (the per-tenant overrides of the ACL default)."""
    out: dict[str, AclDefault] = {}
    for n, item in enumerate((text or "").split(","), start=1):
        if not item.strip():
            continue
        tenant, eq, value = item.partition("=")
        if not eq or not tenant.strip():
            raise ValueError(f"entry {n}: expected 'tenant=public' or 'tenant=deny', got {item.strip()!r}")
        out[tenant.strip()] = AclDefault.from_str(value.strip(), f"entry {n} ({tenant.strip()})")
    return out


def default_for(tenant: str, default: AclDefault, overrides: Mapping[str, AclDefault]) -> AclDefault:
    return overrides.get(tenant, default)
