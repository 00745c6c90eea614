"""Splitting long documents into overlapping word windows, keeping the chunk -> document mapping."""

from __future__ import annotations

import re

from rag.types import Chunk, Document

_WS = re.compile(r"\S+")


def window_bounds(n_words: int, size: int, overlap: int) -> list[tuple[int, int]]:
    """[start, end) word offsets of windows of ``size`` words overlapping by ``overlap`` words.

    The last window is pulled back to end at ``n_words`` so no chunk is a tiny tail.
    """
    if size <= 0:
        raise ValueError(f"size must be greater than 0, got {size}")
    if not 0 <= overlap < size:
        raise ValueError(f"overlap must be in [0, size), got overlap={overlap} size={size}")
    if n_words <= size:
        return [(0, n_words)]
    step = size - overlap
    bounds = []
    start = 0
    while start + size < n_words:
        bounds.append((start, start + size))
        start += step
    bounds.append((max(n_words - size, 0), n_words))
    return bounds


def chunk_document(doc: Document, *, size: int, overlap: int) -> list[Chunk]:
    """Chunks of ``doc``; a document that fits in one window becomes one chunk with its text intact."""
    words = _WS.findall(doc.text)
    if len(words) <= size:
        return [
            Chunk(f"{doc.doc_id}#0", doc.doc_id, 0, doc.title, doc.text, doc.metadata, doc.tenant, doc.acl)
        ]
    return [
        Chunk(
            f"{doc.doc_id}#{i}",
            doc.doc_id,
            i,
            doc.title,
            " ".join(words[start:end]),
            doc.metadata,
            doc.tenant,
            doc.acl,
        )
        for i, (start, end) in enumerate(window_bounds(len(words), size, overlap))
    ]
