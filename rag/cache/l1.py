"""L1: the in-process exact cache, LRU with a TTL, bounded by entries and by bytes.

A value's bytes are given by the caller (``put(..., size=...)``: for a cached answer, the length of its
serialised JSON, known when it was serialised), never measured by walking the object. Invariants: at most
``max_entries`` values and ``sum(size) <= max_bytes``; a value larger than ``max_bytes`` is not held (and
evicts nothing).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

V = TypeVar("V")


class LruTtl(Generic[V]):
    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        *,
        max_bytes: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1 (or None: no byte cap), got {max_bytes}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, int, V]] = OrderedDict()
        self.bytes = 0

    def get(self, key: str) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        expires, _, value = item
        if expires <= self._clock():
            self._pop(key)
            return None
        self._items.move_to_end(key)
        return value

    def put(self, key: str, value: V, *, size: int = 0, ttl_s: float | None = None) -> None:
        """Hold ``value`` for ``ttl_s`` (default: the cache's TTL)."""
        self._pop(key)
        if self.max_bytes is not None and size > self.max_bytes:
            return
        self._items[key] = (self._clock() + (self.ttl_s if ttl_s is None else ttl_s), size, value)
        self.bytes += size
        while len(self._items) > self.max_entries or (
            self.max_bytes is not None and self.bytes > self.max_bytes
        ):
            _, (_, dropped, _) = self._items.popitem(last=False)
            self.bytes -= dropped

    def drop_where(self, predicate: Callable[[str], bool]) -> int:
        doomed = [k for k in self._items if predicate(k)]
        for k in doomed:
            self._pop(k)
        return len(doomed)

    def _pop(self, key: str) -> None:
        item = self._items.pop(key, None)
        if item is not None:
            self.bytes -= item[1]

    def __len__(self) -> int:
        return len(self._items)
