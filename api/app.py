"""The FastAPI application: wiring only. Retrieval, tenancy, limits and jobs live in ``rag.service``."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import rag
from api.errors import install_handlers
from api.middleware import RequestContextMiddleware
from api.routes import admin, feedback, health, query, rollout
from rag.config import WORKER_ENV, Settings, load_settings
from rag.dense.embedder import Embedder
from rag.dense.store import VectorStore
from rag.rerank.cross_encoder import Reranker
from rag.service.service import RetrievalService

DESCRIPTION = """Hybrid retrieval (BM25 + dense, fused, reranked) scoped per tenant.

Queries need a tenant API key (`Authorization: Bearer <key>`); `/admin` routes and `/jobs` need the admin
token (checked before the request body is read); `/metrics` needs the metrics token when `RAG_METRICS_TOKEN`
is set. Every error has the same shape: `{"error": {"code", "message", "fields": [{"field", "message",
"limit"}]}, "request_id"}`."""


def create_app(
    settings: Settings | None = None,
    *,
    embedder: Embedder | None = None,
    reranker: Reranker | None = None,
    store: VectorStore | None = None,
    freeze_models: bool = False,
) -> FastAPI:
    """The app for ``settings`` (default: from the environment). Models and the index load in the
    lifespan, in the background; ``/ready`` turns 200 when they are loaded."""
    settings = settings or load_settings()
    service = RetrievalService(
        settings, embedder=embedder, reranker=reranker, store=store, freeze_models=freeze_models
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    docs = settings.docs_enabled  # off: /docs, /redoc and /openapi.json are 404 (production)
    app = FastAPI(
        title="rag retrieval service",
        version=rag.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.service = service
    install_handlers(app)
    app.add_middleware(
        RequestContextMiddleware,
        keys=service.keys,
        max_body=settings.max_body_bytes,
        max_admin_body=settings.max_admin_body_bytes,
        max_ingest_body=settings.max_ingest_body_bytes,
    )
    app.include_router(query.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    app.include_router(rollout.router)
    app.include_router(health.router)
    return app


def create_served_app() -> FastAPI:
    """The app ``rag serve`` runs (one per worker process): the process is the service's, so the loaded
    models leave the cyclic GC's reach (see :func:`rag.service.heap.freeze_long_lived`). A worker of
    ``rag serve --workers N`` is a replica of its own: a configured ``RAG_REPLICA_ID`` gets its pid."""
    settings = load_settings()
    if os.environ.get(WORKER_ENV) and settings.replica_id:
        settings = settings.model_copy(update={"replica_id": f"{settings.replica_id}:{os.getpid()}"})
    return create_app(settings, freeze_models=True)
