"""Ingest jobs: every HTTP ingest runs on one ingest thread, in submission order, through the same
:class:`~rag.index.ingest.Ingestor` as ``rag ingest``. Small batches are awaited by the request; large ones
answer 202 and are followed at ``GET /jobs/{id}``. A job that fails publishes nothing, so the previous
index version keeps serving. A job whose version was published but whose switch to it (``switch``, the
service's reload) raised ends ``reload_failed``: the version is durable and is what ``CURRENT`` names, but
this process keeps serving the one it had until a later reload succeeds. The job table is in memory (the
index itself is durable).

:class:`Ingestion` is what the service exposes: a tenant's batch (upserts and deletes of its plain ids)
becomes a job whose switch is :meth:`rag.service.lifecycle.Lifecycle.open_index`; it refuses with
:class:`~rag.service.lifecycle.NotReady` while the models are loading or failed to load."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from rag import metrics
from rag.config import Settings
from rag.index.ingest import Ingestor, IngestReport
from rag.index.replica_leases import ReplicaLeases
from rag.index.versions import VersionStore, version_number
from rag.runtime import ingest_params
from rag.service.lifecycle import Lifecycle, Phase
from rag.tenancy import scoped_id
from rag.types import Document

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
IngestFn = Callable[[ProgressFn], IngestReport]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # nothing was published
    RELOAD_FAILED = "reload_failed"  # published (``report`` says which version), but not served here


def reload_failure(report: IngestReport, exc: BaseException) -> str:
    """What a ``reload_failed`` job says: the version that is published, then why the switch failed."""
    published = (
        f"published version {report.version}"
        if report.version != report.previous_version
        else f"version {report.version} unchanged"
    )
    return f"{published}; reload failed: {type(exc).__name__}: {exc}"


@dataclass(slots=True)
class Job:
    id: str
    tenant: str
    documents: int
    deletes: int
    state: JobState = JobState.QUEUED
    chunks_done: int = 0
    chunks_total: int = 0
    report: IngestReport | None = None
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None

    @property
    def version(self) -> str | None:
        return self.report.version if self.report else None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "tenant": self.tenant,
            "state": self.state.value,
            "documents": self.documents,
            "deletes": self.deletes,
            "progress": {"chunks_done": self.chunks_done, "chunks_total": self.chunks_total},
            "index_version": self.version,
            "report": self.report.as_dict() if self.report else None,
            "error": self.error,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
        }


class IngestJobs:
    def __init__(self, *, keep: int = 1000) -> None:
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._keep = keep
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rag-ingest")

    def submit(
        self,
        tenant: str,
        documents: int,
        deletes: int,
        work: IngestFn,
        switch: Callable[[], None] | None = None,
    ) -> tuple[Job, Future[Job]]:
        """Run ``work`` (the ingest: publishes or raises) on the ingest thread, then ``switch`` (start
        serving what was published); a failure of ``switch`` is reported apart from one of ``work``."""
        job = Job(uuid.uuid4().hex, tenant, documents, deletes)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:  # forget the oldest finished job
                oldest = next((j for j in self._jobs.values() if j.finished_at), None)
                if oldest is None:
                    break
                del self._jobs[oldest.id]
        return job, self._thread.submit(self._run, job, work, switch)

    def _run(self, job: Job, work: IngestFn, switch: Callable[[], None] | None) -> Job:
        job.state, job.started_at = JobState.RUNNING, time.time()

        def progress(done: int, total: int) -> None:
            job.chunks_done, job.chunks_total = done, total

        try:
            report = work(progress)
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
            job.state = JobState.FAILED
            job.finished_at = time.time()
            log.exception("job %s failed; the previous index version keeps serving", job.id)
            return job
        job.report = report
        job.chunks_total = max(job.chunks_total, report.chunks_embedded + report.chunks_given)
        job.chunks_done = job.chunks_total
        try:
            if switch is not None:
                switch()
        except Exception as exc:
            job.error = reload_failure(report, exc)
            job.state = JobState.RELOAD_FAILED
            log.exception("job %s: %s", job.id, job.error)
        else:
            job.state = JobState.SUCCEEDED
            log.info("job %s: %s published", job.id, report.version)
        finally:
            job.finished_at = time.time()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True, slots=True)
class Rollout:
    """How far a published version has reached: the live replicas (:mod:`rag.index.replica_leases`) and
    which of them serve it (or a newer one) already."""

    version: str
    live: tuple[str, ...]
    waiting: tuple[str, ...]  # live replicas still on an older version

    @property
    def complete(self) -> bool:
        return not self.waiting

    def view(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "live_replicas": len(self.live),
            "switched": len(self.live) - len(self.waiting),
            "waiting": list(self.waiting),
            "complete": self.complete,
        }


class Ingestion:
    def __init__(self, settings: Settings, lifecycle: Lifecycle) -> None:
        self.settings = settings
        self.sync_max_docs = settings.ingest_sync_max_docs  # larger batches answer 202 with a job
        self._lifecycle = lifecycle
        self._jobs = IngestJobs()
        self.leases = ReplicaLeases(settings.versions_dir)
        # told (on the event loop) of each version a job published and this process switched to
        self.on_published: Callable[[str], Awaitable[None]] | None = None
        self._announcing: set[asyncio.Future[None]] = set()

    def replicas(self) -> list[dict[str, Any]]:
        """Every replica with a lease on record (live or expired, ``live`` says), by name."""
        now = time.time()
        return [{**asdict(lease), "live": lease.live(now)} for lease in self.leases.all()]

    def published_version(self) -> str | None:
        """The newest published version (what every replica is heading to)."""
        return VersionStore(self.settings.versions_dir).current()

    def rollout(self, version: str) -> Rollout:
        """Which live replicas serve ``version`` or a newer one."""
        live = self.leases.live()
        target = version_number(version)
        waiting = [
            lease.replica for lease in live if lease.version is None or version_number(lease.version) < target
        ]
        return Rollout(version, tuple(lease.replica for lease in live), tuple(waiting))

    async def submit(
        self,
        tenant: str,
        documents: Sequence[Document],
        delete_ids: Sequence[str],
        embedding_model: str | None = None,
    ) -> tuple[Job, Future[Job]]:
        """Queue an ingest of ``documents`` and deletes of ``delete_ids`` (plain ids of ``tenant``). Given
        vectors are checked now (:class:`~rag.index.given_vectors.VectorError`), so that the request is
        refused rather than a job failing — in a worker thread: chunking and checking grow with the
        batch, and must not hold up the event loop."""
        lifecycle = self._lifecycle
        embedder, store = lifecycle.embedder, lifecycle.store
        if lifecycle.phase in (Phase.LOADING, Phase.FAILED) or embedder is None or store is None:
            raise lifecycle.not_ready()
        scoped_deletes = [scoped_id(tenant, d) for d in delete_ids]
        if any(d.vectors is not None for d in documents):
            checker = Ingestor(ingest_params(self.settings), embedder, store, progress=False)
            await asyncio.to_thread(checker.check_vectors, documents, embedding_model)

        def work(progress: ProgressFn) -> IngestReport:
            ingestor = Ingestor(
                ingest_params(self.settings), embedder, store, progress=False, on_progress=progress
            )
            return ingestor.ingest(documents, scoped_deletes, embedding_model=embedding_model)

        # then switch queries to the new version (or become ready on the first one); if that raises, the
        # job ends reload_failed (the version is published) rather than failed
        job, future = self._jobs.submit(
            tenant, len(documents), len(delete_ids), work, switch=lifecycle.open_index
        )
        future.add_done_callback(lambda f: metrics.INGEST_JOBS.labels(f.result().state.value).inc())
        loop = asyncio.get_running_loop()
        future.add_done_callback(lambda f: loop.call_soon_threadsafe(self._published, f.result()))
        return job, future

    def _published(self, job: Job) -> None:
        if self.on_published is not None and job.state is JobState.SUCCEEDED and job.version is not None:
            task = asyncio.ensure_future(self.on_published(job.version))
            self._announcing.add(task)
            task.add_done_callback(self._announcing.discard)

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def close(self) -> None:
        self._jobs.close()
