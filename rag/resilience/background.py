"""Background loops that survive any value and any error.

:func:`run_every` runs a loop's step every ``interval_s`` until it is cancelled. Whatever the step raises
is logged with its traceback, counted in ``rag_background_errors_total{loop}`` and the loop goes on with
its next step; only cancellation ends it. Exceptions the caller names ``quiet`` (Redis unavailable: an
outage, expected and reported elsewhere) are logged at debug level and not counted.

A step that reads many values skips a malformed one and carries on with the rest: it reports the value
with :meth:`LoopErrors.skip` (counted every time, logged once while the same problem repeats — a bad
value read every interval is one warning, not one per interval).

:func:`cancel_and_wait` is how a loop (any background task) is stopped: cancelled until it has ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from rag import metrics

log = logging.getLogger(__name__)

MAX_REMEMBERED = 1024  # problems remembered for de-duplicating warnings (then forgotten all at once)


class LoopErrors:
    """Counts a loop's errors and logs each distinct problem of a source once in a row."""

    def __init__(self, loop: str) -> None:
        self.loop = loop
        self._last: dict[str, str] = {}  # source -> the problem last logged for it

    def skip(self, source: str, problem: str, *, exc_info: bool = False) -> None:
        """Count one skipped value or failed step of ``source``; warn unless it is the same problem as
        the last one logged for ``source``."""
        metrics.BACKGROUND_ERRORS.labels(self.loop).inc()
        if self._last.get(source) == problem:
            log.debug("%s: %s: %s (skipped again)", self.loop, source, problem)
            return
        if len(self._last) >= MAX_REMEMBERED:
            self._last.clear()
        self._last[source] = problem
        log.warning("%s: %s: %s (skipped; the loop goes on)", self.loop, source, problem, exc_info=exc_info)

    def clear(self, source: str) -> None:
        """``source`` is fine again: its next problem is logged."""
        self._last.pop(source, None)


async def run_every(
    interval_s: float,
    step: Callable[[], Awaitable[None]],
    errors: LoopErrors,
    *,
    quiet: tuple[type[Exception], ...] = (),
    sleep_first: bool = False,
    wake: asyncio.Event | None = None,
) -> None:
    """Run ``step`` every ``interval_s`` until cancelled; see the module docstring for what a failing
    step does (never: stop the loop). ``wake``: setting it runs the next step at once (news of work)."""
    if sleep_first:
        await asyncio.sleep(interval_s)
    while True:
        if wake is not None:
            wake.clear()  # a wake-up from now on is one this step may not have seen: it runs another
        try:
            await step()
        except quiet as exc:
            log.debug("%s: step skipped: %s", errors.loop, exc)
        except Exception as exc:
            errors.skip("step", f"{type(exc).__name__}: {exc}"[:500], exc_info=True)
        else:
            errors.clear("step")
        if wake is None:
            await asyncio.sleep(interval_s)
        else:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), interval_s)


CANCEL_RETRY_S = 0.05


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again while it runs on: a cancellation a
    task swallowed (Python 3.11's ``asyncio.wait_for`` returns its inner result instead of raising when the
    two race) must not leave a close waiting forever on a loop that kept looping. What the task raised is
    dropped: it is being stopped."""
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=CANCEL_RETRY_S)
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()
