"""Admin routes (admin token): ingest and delete a tenant's documents, read the index, follow jobs."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

from api.deps import Breakers, Ingest, Queries, Readiness
from api.errors import ApiError, declared
from api.schemas import (
    BreakerChange,
    BreakerOut,
    DocumentIn,
    IndexOut,
    IngestBody,
    IngestResponse,
    JobOut,
    PurgeOut,
)
from api.security import require_admin
from rag.acl import check_acl
from rag.logs import request_id_var
from rag.resilience.breaker import State
from rag.service.jobs import Ingestion, Job
from rag.tenancy import TENANT_PATTERN
from rag.types import Document, GivenVectors

router = APIRouter(tags=["admin"], dependencies=[Depends(require_admin)])

TenantPath = Annotated[str, Path(pattern=TENANT_PATTERN, description="the tenant that owns the documents")]


def _given(doc: DocumentIn) -> GivenVectors | None:
    if doc.embedding is not None:
        return GivenVectors([doc.embedding], "embedding")
    if doc.embeddings is not None:
        return GivenVectors(doc.embeddings, "embeddings")
    return None


def _acl(doc: DocumentIn) -> tuple[str, ...]:
    return check_acl(doc.acl) if doc.acl is not None else ()  # sorted, without duplicates (rag.acl)


def job_out(job: Job, ingestion: Ingestion) -> JobOut:
    view = job.view()
    if job.version is not None:
        view["rollout"] = ingestion.rollout(job.version).view()
    return JobOut.model_validate(view)


@router.post(
    "/admin/tenants/{tenant}/documents",
    response_model=IngestResponse,
    responses={
        202: {"model": IngestResponse, "description": "Accepted as a background job; follow status_url"},
        **declared(401, 403, 413, 422, 503),
    },
)
async def ingest(
    tenant: TenantPath,
    body: IngestBody,
    ingestion: Ingest,
    response: Response,
    background: Annotated[bool, Query(description="always answer 202 and run as a job")] = False,
) -> IngestResponse:
    """Upsert and delete documents of ``tenant`` in one new index version (idempotent: the same batch twice
    publishes nothing new). Batches up to ``RAG_INGEST_SYNC_MAX_DOCS`` documents are answered when the
    version is published; larger ones (or ``background=true``) answer 202 with a job to follow. Documents
    with ``embedding``/``embeddings`` are stored with those vectors and not embedded here; vectors that do
    not fit the collection (model, dimension, norm, one per chunk) are refused with 422 before any job."""
    documents = [
        Document(d.id, d.text, d.title, dict(d.metadata), tenant, vectors=_given(d), acl=_acl(d))
        for d in body.upsert
    ]
    job, done = await ingestion.submit(tenant, documents, body.delete, body.embedding_model)
    status_url = f"/jobs/{job.id}"
    sync = not background and len(documents) + len(body.delete) <= ingestion.sync_max_docs
    if sync:
        await asyncio.wrap_future(done)
        response.status_code = 200
    else:
        response.status_code = 202
        response.headers["Location"] = status_url
    return IngestResponse(
        request_id=request_id_var.get() or "", job=job_out(job, ingestion), status_url=status_url
    )


@router.get("/jobs/{job_id}", response_model=JobOut, responses=declared(401, 403, 404, 422))
async def get_job(job_id: Annotated[str, Path(pattern=r"^[0-9a-f]{32}$")], ingestion: Ingest) -> JobOut:
    """An ingest job: state, progress in chunks, and the index version it published."""
    job = ingestion.get(job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r} (jobs are kept in memory until restart)")
    return job_out(job, ingestion)


@router.get("/admin/index", response_model=IndexOut, responses=declared(401, 403, 503))
async def index(lifecycle: Readiness, ingestion: Ingest) -> IndexOut:
    """The index version this replica serves, with document counts per tenant; the newest published version
    and every replica of the collection with the version it serves."""
    summary = lifecycle.index_summary()
    summary["published_version"] = ingestion.published_version()
    summary["replicas"] = ingestion.replicas()
    return IndexOut.model_validate(summary)


@router.delete(
    "/admin/tenants/{tenant}/cache", response_model=PurgeOut, responses=declared(401, 403, 422, 503)
)
async def purge_cache(tenant: TenantPath, queries: Queries) -> PurgeOut:
    """Forget every cached answer of ``tenant`` on every replica (through Redis when configured)."""
    await queries.purge_cache(tenant)  # RedisUnavailable → 503
    return PurgeOut(tenant=tenant, purged=True)


@router.get("/admin/breakers", response_model=list[BreakerOut], responses=declared(401, 403))
async def breakers(board: Breakers) -> list[BreakerOut]:
    """Every dependency's breaker: state, window failure and slow-call rates, time to the next probe."""
    return [BreakerOut.model_validate(b) for b in board.snapshot()]


@router.post("/admin/breakers/{name}", response_model=BreakerOut, responses=declared(401, 403, 404, 422))
async def set_breaker(
    name: Annotated[str, Path(pattern=r"^[a-z]{1,32}$")], change: BreakerChange, board: Breakers
) -> BreakerOut:
    """Force a breaker open (it probes again after its open period) or closed; shared with the other
    replicas like any transition."""
    if name not in board:
        raise ApiError(404, "not_found", f"no breaker {name!r}; breakers: {sorted(board)}")
    board[name].force(State(change.state), f"set {change.state} by an operator")
    return BreakerOut.model_validate(board[name].snapshot())
