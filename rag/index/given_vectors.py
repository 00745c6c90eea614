"""Vectors computed elsewhere ("bring your own vectors"): what is accepted, checked and how rows meet chunks.

A corpus embedded elsewhere (on a GPU, say) is loaded at the speed of the store: its chunks are not sent
to the embedder. The vectors must come from the model the collection was built with (``collection.json``'s
``embedder``; on a collection's first ingest, the configured ``RAG_EMBEDDER_MODEL``), and say so: the
ingest takes the model name and refuses any other.

Formats (one vector per *chunk*, because the chunk is what is searched):

- ``embedding``: one vector for a document that is one chunk (at most ``chunk_words`` words): the usual
  case when the corpus was chunked before it was embedded, each chunk given as a document.
- ``embeddings``: a list of vectors, one per chunk the ingest makes of the document, in chunk order
  (``chunk_words`` / ``chunk_overlap_words`` are in every manifest; :func:`chunk_count` says how many).
- ``rag ingest --vectors FILE.npy``: a float32/float16 ``(n_chunks, dim)`` matrix whose rows follow the
  chunks in corpus order (documents in file order, each document's chunks in order): what ``np.save`` of a
  batch-embedding run writes, with no float text to parse (:func:`attach_rows`).

Checks (:func:`checked_rows`): a 2-d matrix of ``dim`` columns (the collection's dimension), every value
finite, every row of L2 norm within ``NORM_TOLERANCE`` of 1. Rows inside the tolerance are normalised
exactly, as the embedder's own output is; a row outside it is refused (a model that does not normalise,
or vectors of another kind), never silently rescaled. The ingest then applies the collection's Matryoshka
rotation to given rows exactly as to computed ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from rag.errors import RagError
from rag.text.chunking import window_bounds
from rag.types import Document, GivenVectors

# |‖v‖ − 1| allowed before a vector is refused: float16 storage of a unit vector is off by ~1e-3, so
# 1e-2 accepts every honest normalised export while refusing un-normalised model outputs (norms ≫ 1).
NORM_TOLERANCE = 1e-2
MAX_DIM = 4096  # the widest vector the HTTP schema accepts (also its OpenAPI limit)

_WS = re.compile(r"\S+")


class VectorError(RagError, ValueError):
    """Given vectors that cannot be ingested. ``field`` names the input (``upsert.3.embedding``,
    ``embedding_model``) and ``limit`` the bound it broke."""

    def __init__(self, message: str, *, field: str, limit: object = None) -> None:
        super().__init__(message)
        self.field = field
        self.limit = limit


def chunk_count(text: str, *, size: int, overlap: int) -> int:
    """How many chunks :func:`rag.text.chunking.chunk_document` makes of ``text``."""
    return len(window_bounds(len(_WS.findall(text)), size, overlap))


def checked_rows(values: object, *, dim: int, field: str) -> np.ndarray:
    """``values`` as a float32 ``(n, dim)`` matrix of unit rows, or :class:`VectorError` naming ``field``."""
    try:
        rows = np.asarray(values, dtype=np.float32)
    except (TypeError, ValueError):
        raise VectorError(f"{field}: vectors must be lists of numbers of equal length", field=field) from None
    if rows.ndim == 1:
        rows = rows[None, :]
    if rows.ndim != 2 or rows.shape[0] == 0:
        raise VectorError(
            f"{field}: expected a non-empty list of vectors, got shape {rows.shape}", field=field
        )
    if rows.shape[1] != dim:
        raise VectorError(
            f"{field}: vectors have {rows.shape[1]} dimensions, the collection's embedder makes {dim}",
            field=field,
            limit=dim,
        )
    finite = np.isfinite(rows).all(axis=1)
    if not finite.all():
        bad = int(np.flatnonzero(~finite)[0])
        raise VectorError(f"{field}: vector {bad} holds a NaN or an infinity", field=field)
    norms = np.linalg.norm(rows.astype(np.float64), axis=1)
    off = np.abs(norms - 1.0) > NORM_TOLERANCE
    if off.any():
        bad = int(np.flatnonzero(off)[0])
        raise VectorError(
            f"{field}: vector {bad} has L2 norm {norms[bad]:.4g}; given vectors must be normalised "
            f"(|norm - 1| <= {NORM_TOLERANCE})",
            field=field,
            limit=NORM_TOLERANCE,
        )
    return np.asarray(rows / norms[:, None], dtype=np.float32)


def check_documents(
    documents: Iterable[Document],
    *,
    model: str | None,
    collection_model: str,
    dim: int,
    chunk_words: int,
    overlap_words: int,
) -> list[Document]:
    """The documents with their given vectors checked and normalised (:func:`checked_rows`), each
    document's row count equal to its chunk count, and ``model`` equal to ``collection_model`` when any
    vectors are given. Documents without vectors pass through. Raises :class:`VectorError` (field
    ``upsert.<i>.<field>`` or ``embedding_model``)."""
    out: list[Document] = []
    for i, doc in enumerate(documents):
        if doc.vectors is None:
            out.append(doc)
            continue
        field = f"upsert.{i}.{doc.vectors.field}"
        if model is None:
            raise VectorError(
                f"document {doc.doc_id!r} gives vectors: name the model that made them "
                f"(embedding_model, the collection's is {collection_model!r})",
                field="embedding_model",
                limit=collection_model,
            )
        if model != collection_model:
            raise VectorError(
                f"embedding_model {model!r} is not the collection's embedder {collection_model!r}; vectors "
                "of another model are not comparable with the collection's",
                field="embedding_model",
                limit=collection_model,
            )
        rows = checked_rows(doc.vectors.rows, dim=dim, field=field)
        chunks = chunk_count(doc.text, size=chunk_words, overlap=overlap_words)
        if len(rows) != chunks:
            raise VectorError(
                f"{field}: document {doc.doc_id!r} makes {chunks} chunk(s) (chunk_words={chunk_words}, "
                f"overlap={overlap_words}) but {len(rows)} vector(s) were given"
                + ("; give 'embeddings', one per chunk" if doc.vectors.field == "embedding" else ""),
                field=field,
                limit=chunks,
            )
        out.append(replace(doc, vectors=GivenVectors(rows, doc.vectors.field)))
    return out


def load_sidecar(path: Path) -> np.ndarray:
    """A ``--vectors`` file: a 2-d float ``.npy`` (memory-mapped: rows are read as chunks need them)."""
    try:
        matrix: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise VectorError(f"vectors: {path} is not a readable .npy file ({exc})", field="vectors") from None
    if matrix.ndim != 2 or matrix.dtype.kind != "f":
        raise VectorError(
            f"vectors: {path} holds {matrix.dtype} of shape {matrix.shape}; expected floats (n_chunks, dim)",
            field="vectors",
        )
    return matrix


def attach_rows(
    documents: Iterable[Document], matrix: np.ndarray, *, chunk_words: int, overlap_words: int
) -> Iterator[Document]:
    """Documents with consecutive rows of ``matrix`` (a ``--vectors`` sidecar) as their vectors, as many as
    each makes chunks. Raises :class:`VectorError` when the rows run out or are left over."""
    if matrix.ndim != 2:
        raise VectorError(
            f"vectors: expected an (n_chunks, dim) matrix, got shape {matrix.shape}", field="vectors"
        )
    start = 0
    for doc in documents:
        n = chunk_count(doc.text, size=chunk_words, overlap=overlap_words)
        if start + n > len(matrix):
            raise VectorError(
                f"vectors: {len(matrix)} rows, but document {doc.doc_id!r} needs rows up to {start + n - 1}",
                field="vectors",
                limit=len(matrix),
            )
        yield replace(doc, vectors=GivenVectors(matrix[start : start + n], "vectors"))
        start += n
    if start != len(matrix):
        raise VectorError(
            f"vectors: {len(matrix)} rows but the documents make {start} chunks", field="vectors", limit=start
        )
