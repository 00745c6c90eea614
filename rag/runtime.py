"""Opening a collection for search: the current snapshot, Qdrant, the embedder and the reranker.

The composition root below the service and the CLI: the one place where :class:`~rag.config.Settings`
becomes clients, models and parameters (``connect``, ``build_embedder``, ``build_reranker``,
``bm25_params``, ``ingest_params``). Components below it take values, never the settings.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from qdrant_client import QdrantClient

from rag.bm25.index import BM25Params
from rag.config import Settings
from rag.dense.embedder import Embedder, SentenceTransformerEmbedder
from rag.dense.hashing import is_hash_spec, parse_hash_spec
from rag.dense.onnx_embedder import OnnxEmbedder, onnx_serves
from rag.dense.qdrant_store import QdrantStore
from rag.dense.store import VectorStore
from rag.errors import RagError
from rag.index.ingest import Ingestor, IngestParams
from rag.index.segments import VersionView
from rag.index.shard_sync import SyncRecord, backfill_vectors, sync_shard
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.rerank.cross_encoder import CrossEncoderReranker, Reranker
from rag.rerank.domain import Admission, RerankerDomain, admit, corpus_fingerprint
from rag.rerank.onnx_backend import OnnxCrossEncoderReranker
from rag.retrieval import degradation_ladder as ladder
from rag.retrieval.compute import Compute
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.retrievers import DenseRetriever
from rag.routing.vocabulary import vocabularies
from rag.types import Degradation

log = logging.getLogger(__name__)


class NoIndexError(RagError, RuntimeError):
    pass


def connect(settings: Settings) -> QdrantClient:
    """A server client when ``qdrant_url`` is set, else local mode on disk at ``resolved_qdrant_path``."""
    if settings.qdrant_url:
        api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
        return QdrantClient(url=settings.qdrant_url, api_key=api_key, timeout=int(settings.qdrant_timeout_s))
    path = settings.resolved_qdrant_path
    path.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as exc:
        if "already accessed" not in str(exc):
            raise
        raise RuntimeError(
            f"the embedded Qdrant folder {path} is in use by another process (local mode allows one process "
            "per folder); stop that process, or run a Qdrant server and set RAG_QDRANT_URL"
        ) from None


def open_store(settings: Settings) -> VectorStore:
    """The collection's vector store: qdrant-client for a server (``qdrant_url``) or for local mode
    (``vector_engine=local``), else the embedded Rust engine (:class:`~rag.dense.edge_store.EdgeStore`)."""
    if settings.qdrant_url or settings.vector_engine == "local":
        # which index version the collection holds: recorded by the ingest (a server's, shared) or by this
        # process (local mode, its own) — next to the versions, or next to the local-mode folder
        record = (
            settings.versions_dir / STORE_SYNC_RECORD
            if settings.qdrant_url
            else settings.resolved_qdrant_path / f"{settings.collection}.{STORE_SYNC_RECORD}"
        )
        return QdrantStore(connect(settings), settings.collection, sync_record=record)
    from rag.dense.edge_store import EdgeStore  # the engine's native module loads only when chosen

    return EdgeStore.open_slot(
        settings.resolved_edge_path,
        hnsw=settings.edge_index == "hnsw",
        hnsw_ef=settings.edge_hnsw_ef,
        quantization=settings.edge_quantization,
    )


def _store_place(settings: Settings) -> str:
    if settings.qdrant_url:
        return f"collection {settings.collection!r} at {settings.qdrant_url}"
    if settings.vector_engine == "local":
        return f"local mode at {settings.resolved_qdrant_path}"
    return f"edge engine at {settings.resolved_edge_path}"


STORE_SYNC_RECORD = "store-synced.json"  # a Qdrant collection's rag.index.shard_sync record

SERVING_EMBEDDER_THREADS = 1  # RAG_EMBEDDER_THREADS=0 in the service (see its description)


def build_embedder(settings: Settings, *, serving: bool = False) -> Embedder:
    """``hash:<dim>`` selects the deterministic hash embedder (:mod:`rag.dense.hashing`); anything else is a
    sentence-transformers model name or path, run by ``RAG_EMBEDDER_BACKEND``: torch, or onnxruntime for the
    bundled model or a local folder (exported into ``<data_dir>/models/onnx``); ``auto`` (the default) is
    onnx fp32 where it can run the model, else torch. ``serving``: for the service's queries (one text per
    call), which changes the default thread count."""
    if is_hash_spec(settings.embedder_model):
        return parse_hash_spec(settings.embedder_model)
    backend = settings.embedder_backend
    if backend == "auto":
        backend = "onnx" if onnx_serves(settings.embedder_model) else "torch"
    if backend == "torch":
        return SentenceTransformerEmbedder(
            settings.embedder_model, max_seq_length=settings.embed_max_seq_length
        )
    return OnnxEmbedder(
        settings.embedder_model,
        cache_dir=onnx_cache_dir(settings),
        max_seq_length=settings.embed_max_seq_length,
        quantize=backend == "onnx-int8",
        threads=settings.embedder_threads or (SERVING_EMBEDDER_THREADS if serving else 0),
    )


def served_embedder_name(manifest: dict[str, Any]) -> str | None:
    """The embedder an index version was built with (its manifest's ``embedder``; None before manifests
    named it)."""
    name = manifest.get("embedder")
    return str(name) if name else None


INT8_SUFFIX = "#onnx-int8"  # rag.dense.onnx_embedder: the int8 model's name is its own


def configured_embedder_name(settings: Settings) -> str:
    """The name the embedder ``settings`` configure reports (what a manifest records), without building
    it."""
    if is_hash_spec(settings.embedder_model):
        return parse_hash_spec(settings.embedder_model).name
    int8 = settings.embedder_backend == "onnx-int8"
    return settings.embedder_model + (INT8_SUFFIX if int8 else "")


def settings_for_embedder(settings: Settings, name: str) -> Settings:
    """``settings`` that build the embedder named ``name`` (a manifest's): itself when they already do
    (a ``hash:64:0.01`` spec keeps its delay), else its model, on the int8 backend for an int8 name."""
    if configured_embedder_name(settings) == name:
        return settings
    if name.endswith(INT8_SUFFIX):
        return settings.model_copy(
            update={"embedder_model": name.removesuffix(INT8_SUFFIX), "embedder_backend": "onnx-int8"}
        )
    backend = "auto" if settings.embedder_backend == "onnx-int8" else settings.embedder_backend
    return settings.model_copy(update={"embedder_model": name, "embedder_backend": backend})


def embedder_settings(settings: Settings) -> Settings:
    """``settings`` with the embedder of the collection's current version, when one is published: the
    model that answers queries is the served version's, not ``RAG_EMBEDDER_MODEL`` (which names the model
    the next ingest embeds with, and an ingest refuses a model the collection was not built with)."""
    versions = VersionStore(settings.versions_dir)
    current = versions.current()
    manifest_file = versions.path(current) / "manifest.json" if current else None
    if manifest_file is None or not manifest_file.is_file():
        return settings
    name = served_embedder_name(json.loads(manifest_file.read_text()))
    return settings if name is None else settings_for_embedder(settings, name)


def onnx_cache_dir(settings: Settings) -> Path:
    """Where exported ONNX models are cached (shared by the collections of a data dir)."""
    return settings.data_dir / "models" / "onnx"


def build_reranker(settings: Settings) -> Reranker | None:
    """The configured reranker (``RAG_RERANKER_MODEL`` + ``RAG_RERANKER_BACKEND``), or None."""
    if not settings.reranker_model:
        return None
    if settings.reranker_backend == "torch":
        return CrossEncoderReranker(
            settings.reranker_model,
            max_length=settings.reranker_max_length,
            batch_size=settings.reranker_batch_size,
        )
    return OnnxCrossEncoderReranker(
        settings.reranker_model,
        max_length=settings.reranker_max_length,
        batch_size=settings.reranker_batch_size,
        quantize=settings.reranker_backend == "onnx-int8",
    )


def reranker_admission(settings: Settings, snapshot: IndexSnapshot) -> Admission | None:
    """Whether the configured reranker may rerank this collection (:func:`rag.rerank.domain.admit`: its
    ``rag_reranker.json`` names this collection, or this corpus, and says rerank helps there; or
    ``RAG_RERANKER_ALLOW_UNVALIDATED``); None when no reranker is configured."""
    if not settings.reranker_model:
        return None
    return admit(
        RerankerDomain.read(settings.reranker_model),
        collection=settings.collection,
        fingerprint=lambda: corpus_fingerprint(snapshot.doc_ids),
        allow_unvalidated=settings.reranker_allow_unvalidated,
    )


def bm25_params(settings: Settings) -> BM25Params:
    return BM25Params(k1=settings.bm25_k1, b=settings.bm25_b, idf=settings.bm25_idf)


def ingest_params(settings: Settings) -> IngestParams:
    return IngestParams(
        collection=settings.collection,
        versions_dir=settings.versions_dir,
        rotation=settings.matryoshka_rotation,
        chunk_words=settings.chunk_words,
        chunk_overlap_words=settings.chunk_overlap_words,
        embed_batch_size=settings.embed_batch_size,
    )


def _sync(store: VectorStore, versions: VersionStore, version: str) -> None:
    """Bring ``store`` to ``version``; a store that holds a version whose segments lack vectors (written
    before they carried them) writes them there first, so that other processes can fill their shards."""
    view = VersionView.load(versions, version)
    if view is None:
        return
    if view.lacking_vectors(versions) and store.count():
        try:
            with versions.lock():  # not beside an ingest (it may merge those segments)
                backfill_vectors(store, versions, view)
        except RuntimeError as exc:
            log.info("segment vectors not written now: %s", exc)
    sync_shard(store, versions, view)


class Runtime:
    """A collection opened for search: the current snapshot and the clients and models it needs."""

    def __init__(
        self,
        settings: Settings,
        store: VectorStore,
        embedder: Embedder,
        reranker: Reranker | None,
        snapshot: IndexSnapshot,
        compute: Compute | None = None,
        *,
        rerank_refusal: Degradation | None = None,
    ) -> None:
        """``compute``: where model and CPU work runs (default: inline; the service micro-batches).
        ``rerank_refusal``: why the configured reranker does not rerank this collection (``reranker`` is
        None then; a planned rerank says ``rerank/unvalidated``)."""
        self.settings = settings
        self.store = store
        self.embedder = embedder
        self.reranker = reranker
        self.rerank_refusal = rerank_refusal
        self.snapshot = snapshot
        self.compute = compute
        self._embedders: dict[str, Embedder] = {embedder.name: embedder}
        self.pipeline = self._pipeline()
        self._reload_lock = threading.Lock()  # a follower's reload and an ingest job's, one at a time

    @classmethod
    def open(
        cls,
        settings: Settings,
        *,
        load_reranker: bool = True,
        store: VectorStore | None = None,
        embedder: Embedder | None = None,
        reranker: Reranker | None = None,
        compute: Compute | None = None,
    ) -> Runtime:
        """Open the current version; ``store`` / ``embedder`` / ``reranker`` reuse ones the caller already
        has (a given ``reranker`` wins over ``load_reranker``). The configured reranker
        (``RAG_RERANKER_MODEL``, loaded here or given) reranks only a collection it was validated on
        (:func:`reranker_admission`); refused, it is dropped and :attr:`rerank_refusal` says why. A
        reranker given with no model configured is the caller's own choice (tests) and not checked."""
        snapshot = IndexSnapshot.load(VersionStore(settings.versions_dir), bm25_params=bm25_params(settings))
        if snapshot is None:
            raise NoIndexError(
                f"collection {settings.collection!r} has no published index under {settings.versions_dir}; "
                "run `rag ingest PATH` first"
            )
        given = store
        store = store or open_store(settings)
        versions = VersionStore(settings.versions_dir)
        try:
            if store.per_process:  # this process's own shard: filled from the version's segments
                store.ensure_collection(int(snapshot.manifest["dim"]))
                _sync(store, versions, snapshot.version)
            elif snapshot.point_rows and store.count() == 0:
                raise NoIndexError(
                    f"collection {settings.collection!r} has a published index ({snapshot.version}) but "
                    f"its vector store ({_store_place(settings)}) is empty: vectors written by another "
                    "engine, or lost; run `rag ingest PATH` again to rebuild them"
                )
        except BaseException:
            if given is None:
                store.close()
            raise
        refusal = None
        admission = reranker_admission(settings, snapshot) if reranker is not None or load_reranker else None
        if admission is not None:
            log.log(
                logging.WARNING if not admission.admitted or admission.overridden else logging.INFO,
                "reranker %s on %r: %s — %s",
                settings.reranker_model,
                settings.collection,
                "reranks" if admission.admitted else "does not rerank",
                admission.reason,
            )
            if not admission.admitted:
                reranker, refusal = None, ladder.rerank_unvalidated(admission.reason)
        if reranker is None and load_reranker and refusal is None:
            reranker = build_reranker(settings)
        runtime = cls(
            settings,
            store,
            embedder or build_embedder(settings),
            reranker,
            snapshot,
            compute,
            rerank_refusal=refusal,
        )
        served = runtime.embedder_for(snapshot)  # the version decides which model embeds the queries
        if served is not runtime.embedder:
            runtime.embedder = served
            runtime.pipeline = runtime._pipeline()
        return runtime

    @classmethod
    def open_beside(cls, settings: Settings, serving: Runtime) -> Runtime:
        """Another collection opened beside ``serving`` to be judged against it (a staged candidate,
        :mod:`rag.candidates`): its own snapshot, vector store and query embedder (its version's), and
        ``serving``'s reranker (with its admission: the candidate holds the same documents) and compute."""
        embedder = build_embedder(embedder_settings(settings), serving=serving.compute is not None)
        embedder.warm_up()
        runtime = cls.open(settings, load_reranker=False, embedder=embedder, compute=serving.compute)
        runtime.reranker, runtime.rerank_refusal = serving.reranker, serving.rerank_refusal
        runtime.pipeline = runtime._pipeline()
        return runtime

    def embedder_for(self, snapshot: IndexSnapshot) -> Embedder:
        """The embedder that answers queries on ``snapshot``: the one its manifest names (built once and
        kept, so that switching back costs nothing), or the current one when they agree or the manifest
        names none. Queries embedded by another model than the version's vectors would be searched
        against vectors of another space: same dimension, silently wrong; another, an error."""
        name = served_embedder_name(snapshot.manifest)
        if name is None or name == self.embedder.name:
            return self.embedder
        known = self._embedders.get(name)
        if known is None:
            log.warning(
                "index version %s of %r was built with embedder %r: it answers its queries (configured: %r)",
                snapshot.version,
                self.settings.collection,
                name,
                self.embedder.name,
            )
            known = self._embedders[name] = build_embedder(
                settings_for_embedder(self.settings, name), serving=self.compute is not None
            )
        return known

    @property
    def rerank_configured(self) -> bool:
        """Whether plans should rerank: a reranker serves here, or one is configured and refused (then a
        planned rerank answers with the first stage and ``rerank/unvalidated``)."""
        return self.reranker is not None or self.rerank_refusal is not None

    def warm_up(self) -> None:
        """Load the models now, so that no query pays for it."""
        self.embedder.warm_up()
        if self.reranker is not None:
            self.reranker.warm_up()

    def _pipeline(self) -> SearchPipeline:
        stale = max(self.store.count() - len(self.snapshot.point_rows), 0)
        dense = DenseRetriever(self.snapshot, self.store, stale_points=stale)
        return SearchPipeline(
            self.snapshot,
            self.embedder,
            dense,
            self.reranker,
            self.compute,
            rerank_refusal=self.rerank_refusal,
        )

    def ingestor(self, *, progress: bool = True) -> Ingestor:
        return Ingestor(ingest_params(self.settings), self.embedder, self.store, progress=progress)

    def reload(self) -> bool:
        """Switch to the current published version (after an ingest, or another process's publish); True
        when it switched. A process's own vector shard is brought to that version first (its points added;
        the old version's kept until the next switch). Readers that took ``pipeline`` before the switch
        finish on the old version: a pipeline never changes its snapshot."""
        with self._reload_lock:
            versions = VersionStore(self.settings.versions_dir)
            current = versions.current()
            if current is None or current == self.snapshot.version:
                return False
            snapshot = IndexSnapshot.load(versions, current, bm25_params=bm25_params(self.settings))
            if snapshot is None:
                return False
            if self.store.per_process:
                _sync(self.store, versions, snapshot.version)
            snapshot.bm25  # noqa: B018 - build the BM25 index here, not in the first query after the switch
            vocabularies(snapshot)  # the router's per-tenant IDF, likewise
            embedder = self.embedder_for(snapshot)  # a version built with another model brings it along
            embedder.warm_up()
            self.snapshot, self.embedder = snapshot, embedder
            self.pipeline = self._pipeline()
            return True

    def vector_store_summary(self) -> dict[str, Any]:
        """What the vector store holds: its points (the version served, plus the one it replaced, kept
        until the next switch) and the version its sync record names."""
        record = SyncRecord.read(self.store.sync_record) if self.store.sync_record else None
        return {
            "points": self.store.count(),
            "holds_version": record.version if record else None,
            "per_process": self.store.per_process,
        }

    def resync(self) -> None:
        """Compare this process's own vector shard with the version served in full (its record no longer
        trusted: after this replica's lease lapsed, say) and bring it back to that version."""
        if not self.store.per_process:
            return
        with self._reload_lock:
            if self.store.sync_record is not None:
                self.store.sync_record.unlink(missing_ok=True)
            _sync(self.store, VersionStore(self.settings.versions_dir), self.snapshot.version)
            self.pipeline = self._pipeline()

    def close(self) -> None:
        self.store.close()
