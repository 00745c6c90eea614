"""The service's answers as frozen dataclasses, read from their JSON.

Invariant: ``X.from_json(body).to_json() == body`` for every answer of the server this client was written
against *and* of a newer one. Each type keeps the keys it does not know in ``extra`` (a newer server's new
fields reach the caller instead of breaking the parse) and a key an older server leaves out takes its
default; ``to_json`` writes back exactly the keys that were read. Only a body that is not the expected shape
(not an object, ``results`` not a list…) is refused, with :class:`~rag.clients.errors.RagProtocolError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar

from rag.clients.errors import RagProtocolError

T = TypeVar("T", bound="_Wire")


def _object(body: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise RagProtocolError(f"{what}: expected a JSON object, got {type(body).__name__}")
    return body


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise RagProtocolError(f"{what}: expected a JSON array, got {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class _Wire:
    """A JSON object read field by field: the dataclass fields that are not ``extra`` or ``_present`` are
    its known keys; a nested type's ``_NESTED`` entry says how to read and write that key."""

    extra: Mapping[str, Any] = field(default_factory=dict, kw_only=True, compare=True, repr=False)
    # the known keys the body had, so that to_json writes back what was read and nothing more
    _present: frozenset[str] = field(default=frozenset(), kw_only=True, compare=False, repr=False)

    @classmethod
    def _known(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls) if f.name not in ("extra", "_present"))

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        return value

    def _write(self, name: str, value: Any) -> Any:
        return value

    @classmethod
    def from_json(cls: type[T], body: Any) -> T:
        obj = _object(body, cls.__name__)
        known = cls._known()
        values = {name: cls._read(name, obj[name]) for name in known if name in obj}
        extra = {key: value for key, value in obj.items() if key not in known}
        try:
            return cls(**values, extra=extra, _present=frozenset(values))
        except TypeError as exc:  # a required key missing
            raise RagProtocolError(f"{cls.__name__}: {exc}") from None

    def to_json(self) -> dict[str, Any]:
        """The JSON object this value was read from (known keys as read, then the unknown ones)."""
        present = self._present or frozenset(self._known())  # built in code: every field
        out = {name: self._write(name, getattr(self, name)) for name in self._known() if name in present}
        out.update(self.extra)
        return out


@dataclass(frozen=True, slots=True)
class SearchResult(_Wire):
    """One passage: ``text`` is the chunk's text, ``doc_id`` the document it belongs to, ``rank`` from 1."""

    doc_id: str
    text: str
    score: float = 0.0
    rank: int = 0
    chunk_id: str = ""
    title: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Degradation(_Wire):
    """A step that did not run as planned: ``code`` is e.g. ``timeout``, ``breaker_open``, ``bm25_only``."""

    step: str
    code: str
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Cost(_Wire):
    embedded_texts: int = 0
    rerank_pairs: int = 0
    candidates: int = 0
    cpu_ms: float | None = None
    money: float | None = None
    currency: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_money: float = 0.0


@dataclass(frozen=True, slots=True)
class Answer(_Wire):
    """The synthesised answer (``answer=True`` and an LLM configured on the server)."""

    text: str
    model: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reused: bool = False


@dataclass(frozen=True, slots=True)
class QueryResult(_Wire):
    """A ``POST /query`` answer. ``degraded`` empty: every planned step ran; ``cache``: ``l1``, ``l2``,
    ``coalesced``, ``miss`` or ``off``; ``index_version``: the index version that answered."""

    request_id: str
    results: tuple[SearchResult, ...]
    index_version: str = ""
    route: str = ""
    plan: Mapping[str, Any] = field(default_factory=dict)
    degraded: tuple[Degradation, ...] = ()
    cache: str = ""
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    cost: Cost | None = None
    took_ms: float = 0.0
    answer: Answer | None = None

    @classmethod
    def _read(cls, name: str, value: Any) -> Any:
        if name == "results":
            return tuple(SearchResult.from_json(r) for r in _list(value, "QueryResult.results"))
        if name == "degraded":
            return tuple(Degradation.from_json(d) for d in _list(value, "QueryResult.degraded"))
        if name == "cost":
            return None if value is None else Cost.from_json(value)
        if name == "answer":
            return None if value is None else Answer.from_json(value)
        return value

    def _write(self, name: str, value: Any) -> Any:
        if name in ("results", "degraded"):
            return [item.to_json() for item in value]
        if name in ("cost", "answer"):
            return None if value is None else value.to_json()
        return value

    @property
    def doc_ids(self) -> list[str]:
        """The results' document ids, best first."""
        return [r.doc_id for r in self.results]

    @property
    def degradation_codes(self) -> list[str]:
        return [d.code for d in self.degraded]


@dataclass(frozen=True, slots=True)
class FeedbackResult(_Wire):
    """What ``POST /feedback`` taught the router: the arm that served, quality and reward."""

    request_id: str
    arm: str = ""
    quality: float = 0.0
    reward: float = 0.0
    cpu_s: float = 0.0


@dataclass(frozen=True, slots=True)
class Readiness(_Wire):
    """``GET /ready``: read from the 200 (ready) and the 503 (not yet: ``reason`` says why) alike."""

    ready: bool
    phase: str = ""
    reason: str | None = None
    index_version: str | None = None
    embedder: str | None = None
    reranker: str | None = None
    reranker_refused: str | None = None
