"""A BEIR folder opened for offline work: ingested into its cached collection, then opened for search.

Shared by ``rag eval`` and ``rag train-reranker`` (and benchmarks), so both search the same collection
for the same folder and settings.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from rag.config import Settings
from rag.dense.hashing import is_hash_spec
from rag.index.ingest import Ingestor
from rag.io.sources import read_beir_jsonl
from rag.runtime import Runtime, build_embedder, ingest_params, open_store

log = logging.getLogger(__name__)
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # characters a collection name cannot hold


def dataset_collection(data: Path, settings: Settings) -> str:
    """The cached collection a BEIR folder is ingested into when no collection was chosen."""
    base = _UNSAFE.sub("-", data.resolve().name)[:40]
    suffix = "" if settings.matryoshka_rotation == "pca" else f"-{settings.matryoshka_rotation}"
    model = _UNSAFE.sub("-", Path(settings.embedder_model).name)[:20]
    if settings.embedder_backend != "torch" and not is_hash_spec(settings.embedder_model):
        model += f"-{settings.embedder_backend}"  # other vectors: not the torch-built collection
    return f"beir-{base}-{model}{suffix}"


def open_dataset(settings: Settings, data: Path, *, load_reranker: bool, progress: bool = True) -> Runtime:
    """Ingest the folder's corpus if needed (idempotent: an unchanged corpus publishes nothing new) and open
    it for search, loading the embedder once for both."""
    store = open_store(settings)
    embedder = build_embedder(settings)
    try:
        report = Ingestor(ingest_params(settings), embedder, store, progress=progress).ingest(
            read_beir_jsonl(data / "corpus.jsonl")
        )
        log.info(
            "index %s ready (%d chunks, %d embedded now)",
            report.version,
            report.chunks_total,
            report.chunks_embedded,
        )
        return Runtime.open(settings, load_reranker=load_reranker, store=store, embedder=embedder)
    except BaseException:
        store.close()
        raise
