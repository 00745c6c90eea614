"""Which errors count against a dependency: a breaker opens on the dependency's failures, not on a bad
input's.

A model (the embedder, the reranker) that refuses what it was given raises ``ValueError`` or
``TypeError`` (tokenizers and numpy do; the micro-batcher pins a batch's failure on the one submission
that causes it, :mod:`rag.service.batching`). That is the input's fault: the same model serves every
other input, so it must not push the model's breaker towards open (one tenant's poisoned query would
otherwise shed everyone's dense retrieval). Everything else — timeouts, connection errors, a crashed
model (``RuntimeError``) — is the dependency's.

For the other dependencies every error counts: a ``ValueError`` from the LLM's client or Redis means a
malformed *reply*, which is the dependency's fault.
"""

from __future__ import annotations

from collections.abc import Callable

from rag.types import Dependency

INPUT_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError)
MODEL_DEPENDENCIES = frozenset({Dependency.EMBEDDER, Dependency.RERANKER})


def is_input_error(exc: BaseException) -> bool:
    """An error that the input caused (a model refusing what it was given), not the dependency."""
    return isinstance(exc, INPUT_ERRORS)


def is_dependency_failure(exc: BaseException) -> bool:
    """What a model's breaker counts as a failure: everything but an input error."""
    return not is_input_error(exc)


def failure_predicate(dependency: str) -> Callable[[BaseException], bool]:
    """The breaker's ``is_failure`` for ``dependency``: input errors are excused for the models only."""
    return is_dependency_failure if dependency in MODEL_DEPENDENCIES else _every_error


def _every_error(exc: BaseException) -> bool:
    return True
