"""What identifies a cached answer: the tenant, the index (:class:`IndexIdentity`), the embedding model and
the query's parameters form a *namespace*; within it the L1 key adds the normalised query text. A new
index version is a new namespace, so a stale answer can never be found; another collection, or the same
collection name in another data dir, is another index, so two deployments sharing one Redis never find
each other's answers.

Document ACLs (rag.acl): a query answered under an access scope has the scope's digest in its namespace
(``access``), so an answer is only ever served to callers with exactly the same entries and default —
the same key, hence the same visible documents (L1, L2 and single-flight all key on the namespace). A
query without a scope (``access=""``: no ACL'd document of the tenant in this version, unlisted ones
public) keeps the namespace it had before ACLs."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.index.snapshot import IndexSnapshot

_SPACE = re.compile(r"\s+")
# after the collapse the only whitespace left is " ": a plain rstrip drops the trailing run in one pass
# (the regex ``[\s?!.]+$`` it replaces rescanned the run from every start, quadratic on "?" * n + "a")
_TRAILING = " ?!."


def normalize_query(text: str) -> str:
    """Unicode-normalised, lower-cased, whitespace collapsed, trailing ``?!.`` dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", text).strip().rstrip(_TRAILING)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class IndexIdentity:
    """Which published index an answer was computed from, unique across collections and data dirs.

    The version's name alone is not: it is a per-folder counter (``v000001``), equal in every data dir's
    first version. The manifest's hash tells them apart (it records when and from what the version was
    built); a copy of the same published version (replicas of one deployment) has the same identity, so
    those share their answers."""

    collection: str
    version: str  # the published version's name: what answers report as ``index_version``
    manifest: str  # hash of the version's manifest (canonical JSON)

    @classmethod
    def of(cls, collection: str, version: str, manifest: Mapping[str, Any]) -> IndexIdentity:
        digest = hashlib.blake2b(_canonical(manifest).encode(), digest_size=12).hexdigest()
        return cls(collection, version, digest)

    @classmethod
    def of_snapshot(cls, collection: str, snapshot: IndexSnapshot) -> IndexIdentity:
        """The snapshot's identity, hashed on first use and kept with the snapshot."""
        return snapshot.derived(
            (cls, collection), lambda: cls.of(collection, snapshot.version, snapshot.manifest)
        )

    @property
    def key(self) -> str:
        """One string for the whole identity (collections hold no ``/``: ``RAG_COLLECTION``'s pattern)."""
        return f"{self.collection}/{self.version}/{self.manifest}"


@dataclass(frozen=True, slots=True)
class Namespace:
    tenant: str
    index: IndexIdentity
    model: str
    params: str  # canonical JSON of the parameters that change the answer
    access: str = ""  # the access scope's digest (rag.acl.AccessScope.key); "": no ACL applies

    @classmethod
    def of(
        cls, tenant: str, index: IndexIdentity, model: str, params: dict[str, Any], *, access: str = ""
    ) -> Namespace:
        return cls(tenant, index, model, _canonical(params), access)

    @property
    def digest(self) -> str:
        parts = (self.tenant, self.index.key, self.model, self.params)
        raw = "\x1f".join((*parts, "acl", self.access) if self.access else parts)
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()

    def exact_key(self, query: str) -> str:
        return f"{self.digest}:{normalize_query(query)}"
