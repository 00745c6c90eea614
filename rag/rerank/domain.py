"""What a trained reranker knows of its domain, and whether it may rerank a collection.

`rag train-reranker` writes, beside the model (``rag_reranker.json``), the collection, index version and
corpus fingerprint it was trained and validated on, and what the held-out queries showed: the nDCG@10 of
the first stage alone and of each blend, and whether reranking helps (``rerank``). A reranker that learned
one corpus can hurt another (a SciFact-trained cross-encoder cost −0.057 nDCG@10 on a corpus of long,
argument-like queries), so serving checks the record (:func:`admit`): a collection gets reranked only by a
model validated *on it* — its record names the collection (or the same corpus, by fingerprint) and says
rerank helps — unless the operator overrides. Refused, the first-stage order stands and answers that would
have been reranked say so (``rerank/unvalidated``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RERANKER_CONFIG = "rag_reranker.json"  # written by `rag train-reranker` next to the model


def corpus_fingerprint(doc_ids: Iterable[str]) -> str:
    """An identity of a corpus that does not depend on the order of its documents, the collection's name
    or the embedder: sha256 of its sorted document ids (first 16 hex digits)."""
    digest = hashlib.sha256()
    for doc_id in sorted(doc_ids):
        digest.update(doc_id.encode())
        digest.update(b"\n")
    return digest.hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RerankerDomain:
    """The collection a reranker was trained and validated on, and the verdict of that validation.

    ``rerank``: the held-out queries showed reranking beat the first stage alone. ``first_stage`` and
    ``best_blend``: their nDCG@10 there (None when the record has no validation table)."""

    collection: str
    index_version: str | None
    corpus_fingerprint: str | None
    rerank: bool
    validation_queries: int
    first_stage: float | None = None
    best_blend: float | None = None

    @classmethod
    def read(cls, model: str | Path) -> RerankerDomain | None:
        """The record of a model folder; None when there is none, or it predates domain records (no
        ``collection``)."""
        path = Path(model) / RERANKER_CONFIG
        if not path.is_file():
            return None
        return cls.of(json.loads(path.read_text()))

    @classmethod
    def of(cls, record: dict[str, Any]) -> RerankerDomain | None:
        if not record.get("collection"):
            return None
        table: dict[str, float] = record.get("validation_ndcg@10") or {}
        blends = [v for k, v in table.items() if k.startswith("blend_")]
        return cls(
            collection=str(record["collection"]),
            index_version=record.get("index_version"),
            corpus_fingerprint=record.get("corpus_fingerprint"),
            rerank=bool(record.get("rerank", False)),
            validation_queries=int(record.get("validation_queries", 0)),
            first_stage=table.get("first_stage_only"),
            best_blend=max(blends) if blends else None,
        )

    def covers(self, collection: str, fingerprint: Callable[[], str]) -> bool:
        """Whether this record is about ``collection``: by name, or the same corpus (fingerprint; called
        only when the names differ — an eval collection is named after its embedder, the corpus is not)."""
        if self.collection == collection:
            return True
        return self.corpus_fingerprint is not None and self.corpus_fingerprint == fingerprint()

    def verdict(self) -> str:
        if self.first_stage is None or self.best_blend is None:
            return f"no held-out validation ({self.validation_queries} queries)"
        return (
            f"held-out nDCG@10 on {self.validation_queries} queries: first stage {self.first_stage:.4f}, "
            f"best rerank blend {self.best_blend:.4f}"
        )


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether a reranker may rerank a collection, and why (in words: the log line, the degradation)."""

    admitted: bool
    reason: str
    overridden: bool = False


def admit(
    domain: RerankerDomain | None,
    *,
    collection: str,
    fingerprint: Callable[[], str],
    allow_unvalidated: bool,
) -> Admission:
    """Admitted when the record covers ``collection`` (:meth:`RerankerDomain.covers`) and its validation
    says rerank helps; otherwise refused — unless ``allow_unvalidated`` (the operator's explicit
    override), which admits anything and says what it overrode. ``fingerprint`` is the served corpus's
    (computed only when needed)."""
    if domain is None:
        why = (
            f"no domain record ({RERANKER_CONFIG} from `rag train-reranker`): not validated on {collection!r}"
        )
    elif not domain.covers(collection, fingerprint):
        why = f"trained and validated on {domain.collection!r}, not on {collection!r}"
    elif not domain.rerank:
        why = f"rerank did not help on {domain.collection!r}: {domain.verdict()}"
    else:
        return Admission(True, f"validated on {domain.collection!r}: {domain.verdict()}")
    if allow_unvalidated:
        return Admission(True, f"{why}; reranking anyway (operator override)", overridden=True)
    return Admission(False, why)
