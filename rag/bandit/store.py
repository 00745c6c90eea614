"""Where the bandit's state (:meth:`rag.bandit.tenants.TenantBandits.to_state`) lives, and how replicas
add their updates to it.

Three stores behind one protocol: in memory (tests, a single short-lived process), a JSON file written
atomically (one machine; processes sharing the file take an ``flock`` on its folder around each write),
and one Redis key per deployment (:meth:`rag.resilience.redis.RedisKeys.bandit`, replicas sharing it). The
Redis store goes through the Redis breaker and timeout and raises
:class:`~rag.resilience.redis.RedisUnavailable`; the caller decides what a failure means (keep learning
in memory, merge later).

**Merging, not overwriting.** :meth:`BanditStore.merge` replaces the saved state ``S`` by
``combine(S)`` with no other merge in between: the caller's ``combine`` adds its updates since its last
merge to whatever is saved (LinUCB's A and b are sums, :mod:`rag.bandit.delta`), so replicas' updates
add up instead of the last save winning. In Redis this is optimistic: read the text, combine (in a
worker thread, outside the Redis timeout), then write with a compare-and-set script that writes only if
the key still holds the text that was read (its SHA-1); another replica's merge in between → read again,
up to :data:`MERGE_TRIES` times. The sums are float64 in Python and JSON carries float64 exactly
(``repr``), so a merge loses nothing to the encoding; the cost is the whole state per merge (a few kB per
tenant with feedback). The format is the one the last-save-wins stores wrote: their saved state loads
and merges as it is.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

from rag.errors import RagError
from rag.resilience.redis import GuardedRedis

State = dict[str, Any]
Combine = Callable[[State | None], State]  # the saved state (None: none, or unreadable) → the new one
MERGE_TRIES = 5  # reads of the Redis state per merge when other replicas keep merging in between

# The key's text, or 1 when its SHA-1 is ARGV[1] (the text the caller has), or nil.
_GET_IF_CHANGED = """
local current = redis.call('GET', KEYS[1])
if current and ARGV[1] ~= '' and redis.sha1hex(current) == ARGV[1] then return 1 end
return current
"""

# Write ARGV[2] only if the key still holds the text whose SHA-1 is ARGV[1] ("" = no key): 1, else 0.
_COMPARE_AND_SET = """
local current = redis.call('GET', KEYS[1])
local digest = ''
if current then digest = redis.sha1hex(current) end
if digest ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""


class MergeConflict(RagError, RuntimeError):
    """Other replicas merged between every read and write of one merge (nothing was written)."""


class BanditStore(Protocol):
    async def load(self, *, if_changed: bool = False) -> State | None:
        """The saved state, or None when nothing was saved yet. ``if_changed``: None also when it is the
        state this store object last loaded or wrote (a periodic read then costs next to nothing)."""
        ...

    async def save(self, state: State) -> None:
        """Replace the saved state."""
        ...

    async def merge(self, combine: Combine) -> State:
        """Replace the saved state ``S`` by ``combine(S)`` atomically (no other merge in between) and
        return it. ``combine(None)``: nothing saved yet, or the saved text is not a JSON object (it is
        replaced). ``combine`` may be called more than once (a retry): it must not change anything."""
        ...


def encode(state: State) -> str:
    """JSON text of a state; refuses NaN/inf (not JSON) and anything json cannot write."""
    try:
        return json.dumps(state, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bandit state is not JSON-safe: {exc}") from None


def readable(text: str | bytes | None, where: str) -> State | None:
    """The state in ``text``, or None when there is none or it is not a JSON object."""
    if text is None:
        return None
    try:
        return decode(text, where)
    except ValueError:
        return None


def decode(text: str | bytes, where: str) -> State:
    """A state from JSON text; ``where`` names the source in the error."""
    try:
        state = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"bandit state in {where} is not valid JSON: {exc}") from None
    if not isinstance(state, dict):
        raise ValueError(f"bandit state in {where} must be a JSON object, got {type(state).__name__}")
    return state


class MemoryStore:
    """Keeps the state as JSON text, so a loaded state never aliases the saved one."""

    def __init__(self) -> None:
        self._text: str | None = None

    async def load(self, *, if_changed: bool = False) -> State | None:
        """(Always reads: one object may stand for a store several replicas share.)"""
        return None if self._text is None else decode(self._text, "memory")

    async def save(self, state: State) -> None:
        self._text = encode(state)

    async def merge(self, combine: Combine) -> State:
        self._text = encode(combine(readable(self._text, "memory")))
        return decode(self._text, "memory")


class FileStore:
    """A JSON file, replaced atomically (temp file in the same folder, fsync, ``os.replace``): a reader or
    a crash sees the old state or the new one, never half of one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._seen: tuple[int, int, int] | None = None  # (inode, mtime ns, size) last loaded or written

    async def load(self, *, if_changed: bool = False) -> State | None:
        return await asyncio.to_thread(self._load, if_changed)

    async def save(self, state: State) -> None:
        text = encode(state)
        await asyncio.to_thread(self._locked, lambda: self._save(text))

    async def merge(self, combine: Combine) -> State:
        return await asyncio.to_thread(self._locked, lambda: self._merge(combine))

    def _merge(self, combine: Combine) -> State:
        try:
            saved = readable(self.path.read_text(encoding="utf-8"), str(self.path))
        except FileNotFoundError:
            saved = None
        state = combine(saved)
        self._save(encode(state))
        self._seen = self._stamp()
        return state

    def _locked(self, work: Callable[[], Any]) -> Any:
        with self._folder_lock():
            return work()

    @contextmanager
    def _folder_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on the state's folder (no lock file to leave behind): processes that
        share the file merge one at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _load(self, if_changed: bool = False) -> State | None:
        stamp = self._stamp()
        if stamp is None or (if_changed and stamp == self._seen):
            return None  # (each write replaces the file: a new inode)
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        self._seen = stamp
        return decode(text, str(self.path))

    def _stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _save(self, text: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


class RedisStore:
    """The state as JSON in the deployment's bandit key; a Redis failure raises
    :class:`~rag.resilience.redis.RedisUnavailable`, a merge that kept losing the race
    :class:`MergeConflict`."""

    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis
        self.key = redis.keys.bandit
        self._compare_and_set = redis.script(_COMPARE_AND_SET)
        self._get_if_changed = redis.script(_GET_IF_CHANGED)
        self._seen = ""  # SHA-1 of the text last loaded or written here

    async def load(self, *, if_changed: bool = False) -> State | None:
        got = await self._get_if_changed([self.key], [self._seen if if_changed else ""])
        if got is None or got == 1:
            return None
        raw = got.encode() if isinstance(got, str) else bytes(got)
        state = await asyncio.to_thread(decode, raw, f"redis key {self.key!r}")  # ~1 MB at 100 tenants
        self._seen = _sha1(raw)
        return state

    async def save(self, state: State) -> None:
        text = encode(state)
        await self.redis.run(lambda r: r.set(self.key, text))

    async def merge(self, combine: Combine) -> State:
        where = f"redis key {self.key!r}"
        for _ in range(MERGE_TRIES):
            got = await self.redis.run(lambda r: r.get(self.key))
            raw = got.encode() if isinstance(got, str) else got  # bytes: the client does not decode

            def combined(raw: bytes | None = raw) -> tuple[State, str]:
                state = combine(readable(raw, where))
                return state, encode(state)

            state, text = await asyncio.to_thread(combined)  # CPU work, outside any Redis timeout
            digest = "" if raw is None else _sha1(raw)
            if await self._compare_and_set([self.key], [digest, text]) == 1:
                self._seen = _sha1(text.encode())
                return state
        raise MergeConflict(f"bandit state in {where} changed under each of {MERGE_TRIES} merge tries")


def _sha1(raw: bytes) -> str:
    return hashlib.sha1(raw, usedforsecurity=False).hexdigest()
