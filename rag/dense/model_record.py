"""What a trained embedder knows about its domain: ``rag_model.json`` in the model folder.

Written by ``rag train-embedder`` beside the weights. It names the collection and index version the model
was mined on and validated on, the data it learned from (folder, split, corpus fingerprint, feedback
judgments), the training configuration and times, and the validation numbers before and after. Nothing
here loads a model: the record is plain JSON read from a folder, so the runtime can ask a model folder
where it comes from without importing torch.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MODEL_RECORD = "rag_model.json"
RECORD_FORMAT = 1


@dataclass(frozen=True, slots=True)
class IndexRef:
    """A collection and one of its published index versions."""

    collection: str
    index_version: str


@dataclass(frozen=True, slots=True)
class EmbedderRecord:
    """The domain record of a fine-tuned embedder (``rag_model.json``)."""

    base_model: str
    mined_on: IndexRef  # the collection + version whose hybrid results gave the hard negatives
    validated_on: IndexRef | None  # the collection re-embedded with this model for validation (None: none)
    data: str  # the BEIR folder (resolved path)
    split: str | None  # the qrels split trained on (None: feedback only)
    corpus_sha256: str | None
    feedback: str | None  # the feedback qrels file, if any
    matryoshka_dims: tuple[int, ...]
    config: dict[str, Any]
    seconds: dict[str, float]
    counts: dict[str, int]
    validation: dict[str, Any] = field(default_factory=dict)
    kind: str = "embedder"
    format: int = RECORD_FORMAT

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EmbedderRecord:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("kind") != "embedder":
            raise ValueError(
                f"not an embedder record (kind={raw.get('kind') if isinstance(raw, dict) else raw!r})"
            )
        if raw.get("format") != RECORD_FORMAT:
            raise ValueError(
                f"embedder record format {raw.get('format')!r}; this version reads {RECORD_FORMAT}"
            )
        validated = raw.get("validated_on")
        return cls(
            base_model=str(raw["base_model"]),
            mined_on=IndexRef(**raw["mined_on"]),
            validated_on=IndexRef(**validated) if validated else None,
            data=str(raw["data"]),
            split=raw.get("split"),
            corpus_sha256=raw.get("corpus_sha256"),
            feedback=raw.get("feedback"),
            matryoshka_dims=tuple(int(d) for d in raw["matryoshka_dims"]),
            config=dict(raw["config"]),
            seconds={k: float(v) for k, v in raw["seconds"].items()},
            counts={k: int(v) for k, v in raw["counts"].items()},
            validation=dict(raw.get("validation") or {}),
        )

    def write(self, folder: Path) -> Path:
        path = folder / MODEL_RECORD
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.to_json() + "\n")
        tmp.replace(path)
        return path

    @classmethod
    def read(cls, folder: Path) -> EmbedderRecord | None:
        """The record in ``folder``, or None when the folder has none (a stock model)."""
        path = folder / MODEL_RECORD
        if not path.is_file():
            return None
        return cls.from_json(path.read_text())


def file_sha256(path: Path, *, chunk: int = 1 << 20) -> str:
    """The sha256 of a file's bytes (a corpus fingerprint: ~20 ms for SciFact's 7.5 MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
