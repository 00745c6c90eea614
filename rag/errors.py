"""The one base of the errors ``rag`` raises on purpose.

Every domain error (a refusal, a missing dependency, an invalid input or configuration) derives from
:class:`RagError`, so a caller can tell "the service said no, for a stated reason" from a bug. Each keeps
its historical built-in base too (``RuntimeError``, ``ValueError``), so ``except ValueError`` around a
parser still catches its error. How an error becomes HTTP (status, code, ``Retry-After``) is not decided
here: ``api.errors.ERROR_TABLE`` is the one table, read by the HTTP handlers and the event stream alike.
"""

from __future__ import annotations


class RagError(Exception):
    """An error with a known meaning; its message says what happened in words."""
