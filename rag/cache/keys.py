"""What identifies a cached answer: the tenant, the index version, the embedding model and the query's
parameters form a *namespace*; within it the L1 key adds the normalised query text. A new index version
is a new namespace, so a stale answer can never be found."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

_SPACE = re.compile(r"\s+")
# after the collapse the only whitespace left is " ": a plain rstrip drops the trailing run in one pass
# (the regex ``[\s?!.]+$`` it replaces rescanned the run from every start, quadratic on "?" * n + "a")
_TRAILING = " ?!."


def normalize_query(text: str) -> str:
    """Unicode-normalised, lower-cased, whitespace collapsed, trailing ``?!.`` dropped."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _SPACE.sub(" ", text).strip().rstrip(_TRAILING)


@dataclass(frozen=True, slots=True)
class Namespace:
    tenant: str
    index_version: str
    model: str
    params: str  # canonical JSON of the parameters that change the answer

    @classmethod
    def of(cls, tenant: str, index_version: str, model: str, params: dict[str, Any]) -> Namespace:
        return cls(tenant, index_version, model, json.dumps(params, sort_keys=True, separators=(",", ":")))

    @property
    def digest(self) -> str:
        raw = "\x1f".join((self.tenant, self.index_version, self.model, self.params))
        return hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()

    def exact_key(self, query: str) -> str:
        return f"{self.digest}:{normalize_query(query)}"
