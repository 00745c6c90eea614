"""Tenant scoping of documents.

Every document belongs to one tenant. Inside one index, a document is known by its *scoped id*:
the document id itself for the unscoped namespace (``tenant == ""``: what ``rag ingest`` writes without
``--tenant``, and what BEIR evaluation uses), ``"<tenant>\\x1f<doc id>"`` otherwise. Scoped ids keep two
tenants' documents with the same id apart in the BM25 table, the fusion and the Qdrant point ids; what a
caller sees is always the plain document id of its own tenant.
"""

from __future__ import annotations

import re

SEPARATOR = "\x1f"  # ASCII unit separator: cannot appear in a tenant name
# ``^…$`` for FastAPI/pydantic (Rust regex: ``$`` is the end of the text; ``\Z`` does not compile there) and
# for the OpenAPI schema (ECMA: the same). Python's ``$`` also matches before a final "\n", so Python code
# checks with ``fullmatch``, never ``match``.
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
_TENANT_RE = re.compile(TENANT_PATTERN)


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name (or "" for the unscoped namespace), else ValueError."""
    if tenant and not _TENANT_RE.fullmatch(tenant):
        raise ValueError(
            f"tenant must match {TENANT_PATTERN} (lowercase letters, digits, '_' and '-', at most 64), "
            f"got {tenant!r}"
        )
    return tenant


def scoped_id(tenant: str, doc_id: str) -> str:
    return f"{tenant}{SEPARATOR}{doc_id}" if tenant else doc_id


def split_scoped(key: str) -> tuple[str, str]:
    """(tenant, doc id) of a scoped id."""
    tenant, sep, doc_id = key.partition(SEPARATOR)
    return (tenant, doc_id) if sep else ("", key)
