"""Hot reload of the rollout configuration from a file and/or a Redis key, without a restart.

Every ``interval_s`` (or on :meth:`ConfigWatcher.check_now`) the watcher reads its sources:

- the **file** (``path``), re-read only when its modification time or size changed; ``.json`` is JSON,
  anything else TOML;
- the **Redis value** (``redis_get``: the deployment's key,
  :attr:`rag.resilience.redis.RedisKeys.rollout_config`), used when it changed; JSON when it starts with
  ``{``, else TOML.

**Redis wins over the file while it holds a value**: an admin sets it for all replicas at once, and a
replica's file may lag behind. Deleting the Redis value hands control back to the file (re-applied
at once), or to the initial config when there is no file. While Redis holds a value, file changes are
read but not applied (even when the Redis value was rejected: fix or delete it). A Redis error keeps the
config that is serving and the loop running.

**All or nothing.** The watcher serves a :class:`~rag.rollout.policy.RoutingPolicy` (the config and every
part built from it) through one reference. A new config's policy is built completely before that reference
is swapped: a text that fails to parse, validate or build (or is not UTF-8) is rejected and no part of it
serves. Listeners run after the swap with the built policy; they only hand its built values on.

A rejected text leaves the old config serving,
``last_error`` holds the reason (until that source yields a valid config again), a warning is logged
and ``rag_background_errors_total{loop="rollout_config"}`` counts it (a Redis outage is not counted: it is
not a bad value). Nothing a source holds, and no error, stops the polling loop. A new config is applied
only when its content changed (see :meth:`RolloutConfig.version`); listeners run after it is applied,
and a listener that raises is logged, never fatal.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Literal

from rag import metrics
from rag.resilience.background import LoopErrors, cancel_and_wait, run_every
from rag.rollout.config import ConfigError, Format, RolloutConfig
from rag.rollout.policy import RoutingPolicy

log = logging.getLogger(__name__)
LOOP = "rollout_config"

Source = Literal["redis-read", "redis", "file"]  # redis-read: Redis unreachable; redis: its value rejected
Listener = Callable[[RoutingPolicy], None]


def file_format(path: Path) -> Format:
    return "json" if path.suffix.lower() == ".json" else "toml"


def text_format(text: str) -> Format:
    return "json" if text.lstrip().startswith("{") else "toml"


class ConfigWatcher:
    def __init__(
        self,
        initial: RolloutConfig,
        *,
        deadline_s: float,
        path: Path | None = None,
        redis_get: Callable[[], Awaitable[bytes | str | None]] | None = None,
        interval_s: float = 2.0,
    ) -> None:
        """``deadline_s``: the request deadline the fallback thresholds are relative to. Raises when
        ``initial`` cannot be built (startup fails)."""
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s}")
        self.deadline_s = deadline_s
        self.initial = self.build(initial)
        self.path = path
        self.redis_get = redis_get
        self.interval_s = interval_s
        self.listeners: list[Listener] = []
        self.source = "initial"  # where the serving config came from: initial, file:<path>, redis, <admin>
        self._policy = self.initial  # the one reference every part of the routing state reads
        self._errors: dict[str, str] = {}  # source -> its outstanding error, in the order they happened
        self._file_signature: tuple[int, int] | None = None
        self._file_text: str | None = None
        self._redis_text: str | None = None
        self._lock = asyncio.Lock()
        self._loop_errors = LoopErrors(LOOP)
        self._task: asyncio.Task[None] | None = None

    # -- what is serving -----------------------------------------------------------------------------
    @property
    def policy(self) -> RoutingPolicy:
        return self._policy

    @property
    def current(self) -> RolloutConfig:
        return self._policy.config

    @property
    def version(self) -> str:
        return self._policy.version

    @property
    def last_error(self) -> str | None:
        """The latest outstanding problem of a source (rejected text, unreadable file, Redis down)."""
        return next(reversed(self._errors.values()), None)

    def status(self) -> dict[str, object]:
        """JSON-ready, for an admin route."""
        return {"version": self.version, "source": self.source, "errors": dict(self._errors)}

    # -- applying ------------------------------------------------------------------------------------
    def build(self, config: RolloutConfig) -> RoutingPolicy:
        """The complete policy of ``config``; raises when a part cannot be built."""
        return RoutingPolicy.build(config, deadline_s=self.deadline_s)

    def validate(self, text: str, fmt: Format) -> RoutingPolicy:
        """Parse, validate and build ``text`` without applying it; :class:`ConfigError` says why not."""
        config = RolloutConfig.parse_text(text, fmt)
        try:
            return self.build(config)
        except Exception as exc:  # whatever a part raises, the config is refused, not half-applied
            raise ConfigError(f"rollout config cannot be applied: {type(exc).__name__}: {exc}"[:500]) from exc

    def apply_text(self, text: str, fmt: Format, source: str = "admin") -> str:
        """Validate, build and apply ``text`` on this replica; returns the serving version or raises
        :class:`ConfigError` (the old config keeps serving). To reach every replica, write the text to
        the Redis key ``redis_get`` reads instead; each replica applies it on its next check."""
        return self._apply(self.validate(text, fmt), source)

    def _apply(self, policy: RoutingPolicy, source: str) -> str:
        version = policy.version
        if version == self.version:
            self.source = source
            return version
        old = self.version
        self._policy, self.source = policy, source  # the swap: every part serves the new version now
        log.info("rollout config %s -> %s applied from %s", old, version, source)
        for listener in list(self.listeners):
            try:
                listener(policy)
            except Exception:
                log.exception("rollout config listener %r failed on version %s", listener, version)
        return version

    def _fail(self, source: Source, message: str) -> None:
        if source != "redis-read":  # a bad value or an unreadable file; an outage is no bad value
            metrics.BACKGROUND_ERRORS.labels(LOOP).inc()
        repeated = self._errors.pop(source, None) == message
        self._errors[source] = message
        if repeated:  # a Redis outage is logged once, not every interval
            return
        log.warning(
            "rollout config source %s failed, version %s keeps serving: %s", source, self.version, message
        )

    def _try_apply(self, source: Source, text: str, fmt: Format, label: str) -> bool:
        try:
            text.encode("utf-8")  # bytes that were not UTF-8 arrive as lone surrogates (see _read_redis)
            policy = self.validate(text, fmt)
        except UnicodeEncodeError:
            self._fail(source, f"{label}: the value is not UTF-8 text")
            return False
        except ConfigError as exc:
            self._fail(source, f"{label}: {exc}")
            return False
        except (ValueError, RecursionError) as exc:  # RecursionError: nesting too deep for the parser
            self._fail(source, f"{label}: {type(exc).__name__}: {exc}"[:500])
            return False
        self._errors.pop(source, None)
        before = self.version
        return self._apply(policy, label) != before

    # -- polling -------------------------------------------------------------------------------------
    async def check_now(self) -> bool:
        """Read the sources now; True when a new config was applied."""
        async with self._lock:
            redis_changed = await self._read_redis()
            file_changed = self._read_file()
            if self._redis_text is not None:
                if redis_changed:
                    return self._try_apply("redis", self._redis_text, text_format(self._redis_text), "redis")
                return False
            if not (redis_changed or file_changed):
                return False
            if self.path is not None and self._file_text is not None:
                label = f"file:{self.path}"
                return self._try_apply("file", self._file_text, file_format(self.path), label)
            if redis_changed:  # the Redis value was deleted and there is no file: back to the start
                before = self.version
                return self._apply(self.initial, "initial") != before
            return False

    async def _read_redis(self) -> bool:
        """Fetch the Redis value; True when it differs from the last one read (deletion included)."""
        if self.redis_get is None:
            return False
        try:
            raw = await self.redis_get()
        except Exception as exc:
            self._fail("redis-read", f"redis: {type(exc).__name__}: {exc}"[:300])
            return False
        self._errors.pop("redis-read", None)
        # undecodable bytes become lone surrogates: a value still held (and rejected), never an error here
        text = raw.decode("utf-8", errors="surrogateescape") if isinstance(raw, bytes) else raw
        if text is not None and not text.strip():
            text = None  # an empty value counts as no value
        if text is None:
            self._errors.pop("redis", None)
        if text == self._redis_text:
            return False
        self._redis_text = text
        return True

    def _read_file(self) -> bool:
        """Re-read the file when its modification time or size changed; True when it did."""
        if self.path is None:
            return False
        try:
            stat = os.stat(self.path)
            signature = (stat.st_mtime_ns, stat.st_size)
            if signature == self._file_signature:
                return False
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            if self._redis_text is None:
                self._fail("file", f"file:{self.path}: {exc}")
            return False
        self._file_signature, self._file_text = signature, text
        return True

    # -- background loop -----------------------------------------------------------------------------
    def start(self) -> None:
        """Poll every ``interval_s`` in a background task (call from a running event loop)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="rag-rollout-config")

    async def close(self) -> None:
        if self._task is None:
            return
        await cancel_and_wait(self._task)
        self._task = None

    async def _loop(self) -> None:
        async def check() -> None:
            await self.check_now()

        # nothing in check_now should raise; if it does, it is logged, counted and the loop goes on
        await run_every(self.interval_s, check, self._loop_errors)
