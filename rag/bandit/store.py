"""Where the bandit's state (:meth:`rag.bandit.linucb.LinUCB.to_state`) lives between restarts.

Three stores behind one protocol: in memory (tests, a single short-lived process), a JSON file written
atomically (one replica with a disk), and one Redis key per deployment
(:meth:`rag.resilience.redis.RedisKeys.bandit`, replicas sharing it). The Redis store goes through the
Redis breaker and timeout and raises :class:`~rag.resilience.redis.RedisUnavailable`; the caller decides
what a failure means (keep learning in memory, save later).

Replicas that share one key overwrite each other's state (last save wins); each replica learns from its
own feedback in between. That is enough for persistence across restarts; merging replicas' statistics
(A and b are sums, so deltas add up) is not done here.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Protocol

from rag.resilience.redis import GuardedRedis

State = dict[str, Any]


class BanditStore(Protocol):
    async def load(self) -> State | None:
        """The saved state, or None when nothing was saved yet."""
        ...

    async def save(self, state: State) -> None:
        """Replace the saved state."""
        ...


def encode(state: State) -> str:
    """JSON text of a state; refuses NaN/inf (not JSON) and anything json cannot write."""
    try:
        return json.dumps(state, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bandit state is not JSON-safe: {exc}") from None


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

    async def load(self) -> State | None:
        return None if self._text is None else decode(self._text, "memory")

    async def save(self, state: State) -> None:
        self._text = encode(state)


class FileStore:
    """A JSON file, replaced atomically (temp file in the same folder, fsync, ``os.replace``): a reader or
    a crash sees the old state or the new one, never half of one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    async def load(self) -> State | None:
        return await asyncio.to_thread(self._load)

    async def save(self, state: State) -> None:
        await asyncio.to_thread(self._save, encode(state))

    def _load(self) -> State | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        return decode(text, str(self.path))

    def _save(self, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
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
    :class:`~rag.resilience.redis.RedisUnavailable`."""

    def __init__(self, redis: GuardedRedis) -> None:
        self.redis = redis
        self.key = redis.keys.bandit

    async def load(self) -> State | None:
        raw = await self.redis.run(lambda r: r.get(self.key))
        return None if raw is None else decode(raw, f"redis key {self.key!r}")

    async def save(self, state: State) -> None:
        text = encode(state)
        await self.redis.run(lambda r: r.set(self.key, text))
