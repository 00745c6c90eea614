"""Synthesized answers, reused with L1 semantics only: the same tenant, namespace (index version, model,
parameters), *normalised query text*, chat model and passages.

Never with L2 semantics: two claims a few words apart can mean the opposite ("X promotes Y" / "X impairs
Y" sit within the semantic cache's threshold on SciFact). Their passages may be shared — both cite the
same evidence — but an answer written for one is wrong for the other, so a semantic hit's passages are
synthesized afresh. Keying on the passages as well means an answer is only ever served with the
passages it was written from.

Bounded like the L1 (:class:`rag.cache.l1.LruTtl`): by count, by bytes (the answer's text and model
name) and by the cache TTL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from rag.cache.keys import Namespace
from rag.cache.l1 import LruTtl
from rag.llm import Synthesis
from rag.types import Result

ENTRY_OVERHEAD_BYTES = 200  # the key, the dataclass and the LRU's bookkeeping, roughly


class AnswerCache:
    def __init__(self, max_entries: int, ttl_s: float, *, max_bytes: int) -> None:
        self._lru: LruTtl[Synthesis] = LruTtl(max_entries, ttl_s, max_bytes=max_bytes)

    @staticmethod
    def key(ns: Namespace, query: str, model: str, results: Sequence[Result]) -> str:
        passages = hashlib.blake2b(
            "\x1f".join(f"{r.doc_id}\x1e{r.text}" for r in results).encode(), digest_size=12
        ).hexdigest()
        return f"{ns.tenant}\x1f{ns.exact_key(query)}\x1f{model}\x1f{passages}"

    def get(self, key: str) -> Synthesis | None:
        return self._lru.get(key)

    def put(self, key: str, answer: Synthesis) -> None:
        size = len(key) + len(answer.text.encode()) + len(answer.model) + ENTRY_OVERHEAD_BYTES
        self._lru.put(key, answer, size=size)

    def purge(self, tenant: str) -> int:
        return self._lru.drop_where(lambda key: key.startswith(f"{tenant}\x1f"))

    def __len__(self) -> int:
        return len(self._lru)
