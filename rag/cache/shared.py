"""What the query cache writes to Redis and reads back, signed and validated.

Anyone who can write to Redis could otherwise serve any answer to any tenant. So every value the cache
shares carries an HMAC-SHA256 keyed by the server secret (``RAG_CACHE_SECRET``, the same on every
replica), over length-prefixed parts that bind it to its place:

- a stream entry (a cached query: the text and vector the neighbour search matches on): the tenant, the
  namespace digest, the entry id, the index (:attr:`rag.cache.keys.IndexIdentity.key`), the text, the
  expiry and the vector bytes;
- an answer: the namespace digest (which holds the tenant), the entry id and the JSON payload.

An entry copied into another tenant's or namespace's keys, or altered, fails the check. An answer that
passes is still validated against :class:`CachedAnswer` (a secret may leak; a bug may write garbage), and
must belong to the index version of the lookup. Whatever fails is treated as absent by the caller.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rag.cache.keys import Namespace
from rag.types import Evidence

SIGNATURE_CHARS = 64  # hex SHA-256
MIN_SECRET_BYTES = 16
MAX_CACHED_RESULTS = 1000


class EntrySigner:
    """HMAC-SHA256 over length-prefixed parts (no two part lists share an encoding)."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"the cache secret must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
        self._key = secret

    def sign(self, *parts: bytes) -> bytes:
        mac = hmac.new(self._key, digestmod=hashlib.sha256)
        for part in parts:
            mac.update(len(part).to_bytes(8, "big"))
            mac.update(part)
        return mac.hexdigest().encode()

    def verify(self, signature: bytes, *parts: bytes) -> bool:
        return hmac.compare_digest(signature, self.sign(*parts))


class CachedResult(BaseModel):
    """One passage of a cached answer (the fields of :class:`rag.types.Result`)."""

    model_config = ConfigDict(extra="forbid")

    doc_id: str
    score: float
    rank: int
    title: str
    text: str
    chunk_id: str
    metadata: dict[str, Any] = Field(default_factory=dict)
    evidence: Evidence | None = None  # validated field by field (absent: cached before evidence existed)
    chunks: int | None = None  # group_by "doc"


class CachedAnswer(BaseModel):
    """What the service caches of an answer (``Computed.cacheable``)."""

    model_config = ConfigDict(extra="forbid")

    results: list[CachedResult] = Field(max_length=MAX_CACHED_RESULTS)
    route: str
    plan: dict[str, Any]
    index_version: str


def seal_answer(signer: EntrySigner, digest: str, entry_id: str, payload: str) -> bytes:
    """The Redis value of an answer: its signature, then its JSON."""
    body = payload.encode()
    return signer.sign(b"answer", digest.encode(), entry_id.encode(), body) + body


def open_answer(signer: EntrySigner, ns: Namespace, entry_id: str, raw: bytes) -> dict[str, Any] | None:
    """The answer in ``raw`` if it was sealed for ``ns`` and ``entry_id`` and is well formed, else None."""
    signature, body = raw[:SIGNATURE_CHARS], raw[SIGNATURE_CHARS:]
    if not signer.verify(signature, b"answer", ns.digest.encode(), entry_id.encode(), body):
        return None
    try:
        answer = CachedAnswer.model_validate_json(body)
    except ValidationError:
        return None
    if answer.index_version != ns.index.version:
        return None
    return answer.model_dump()


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """A cached query as the per-tenant stream carries it to the other replicas."""

    entry_id: str
    digest: str
    version: str  # the index it was computed from (IndexIdentity.key)
    text: str
    expires_at: float
    vector: np.ndarray

    def _parts(self, tenant: str) -> tuple[bytes, ...]:
        return (
            b"query",
            tenant.encode(),
            self.digest.encode(),
            self.entry_id.encode(),
            self.version.encode(),
            _utf8(self.text),
            repr(self.expires_at).encode(),
            np.asarray(self.vector, dtype=np.float32).tobytes(),
        )

    def to_fields(self, signer: EntrySigner, tenant: str) -> dict[str, str | bytes]:
        return {
            "id": self.entry_id,
            "ns": self.digest,
            "ver": self.version,
            "text": _utf8(self.text),
            "exp": repr(self.expires_at),
            "vec": np.asarray(self.vector, dtype=np.float32).tobytes(),
            "sig": self.sign(signer, tenant),
        }

    def sign(self, signer: EntrySigner, tenant: str) -> bytes:
        return signer.sign(*self._parts(tenant))

    @classmethod
    def from_fields(
        cls, signer: EntrySigner, tenant: str, fields: dict[str, bytes], dim: int
    ) -> StreamEntry | None:
        """The entry if every field is there, well formed, of dimension ``dim`` and signed for ``tenant``."""
        try:
            vector = np.frombuffer(fields["vec"], dtype=np.float32)
            entry = cls(
                entry_id=fields["id"].decode(),
                digest=fields["ns"].decode(),
                version=fields["ver"].decode(),
                text=fields["text"].decode("utf-8", "surrogatepass"),
                expires_at=float(fields["exp"].decode()),
                vector=vector,
            )
            signature = fields["sig"]
        except (KeyError, ValueError, UnicodeDecodeError, TypeError, AttributeError):
            return None
        if vector.shape != (dim,) or not np.isfinite(vector).all():
            return None  # another model's vectors are not comparable (or not vectors at all)
        if not signer.verify(signature, *entry._parts(tenant)):
            return None
        return entry


def dumps(answer: dict[str, Any]) -> str:
    """The JSON of an answer: its length is the byte size the caches account for it."""
    return json.dumps(answer, separators=(",", ":"))


def _utf8(text: str) -> bytes:
    """UTF-8 that round-trips any str (a lone surrogate from a JSON ``\\ud800`` included)."""
    return text.encode("utf-8", "surrogatepass")
