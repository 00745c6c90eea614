"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import Readiness
from api.errors import declared
from api.schemas import HealthOut, ReadyOut
from api.security import require_metrics_token
from rag import metrics

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=HealthOut)
async def health() -> HealthOut:
    """The process is up (says nothing about the index)."""
    return HealthOut(status="ok")


@router.get(
    "/ready",
    response_model=ReadyOut,
    responses={503: {"model": ReadyOut, "description": "Not ready yet; `reason` says why"}},
)
async def ready(lifecycle: Readiness) -> JSONResponse:
    """Ready when the models are loaded and an index version is being served."""
    status = ReadyOut.model_validate(lifecycle.status())
    return JSONResponse(status.model_dump(), status_code=200 if status.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}}},
        **declared(401),
    },
    dependencies=[Depends(require_metrics_token)],
)
async def prometheus_metrics() -> Response:
    """Prometheus text exposition (every worker's samples under ``rag serve --workers N``). With
    ``RAG_METRICS_TOKEN`` set it needs ``Authorization: Bearer <metrics token>`` (401 otherwise)."""
    body, content_type = metrics.exposition()
    return Response(body, media_type=content_type)
