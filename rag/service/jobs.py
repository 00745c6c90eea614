"""Ingest jobs: every HTTP ingest runs on one ingest thread, in submission order, through the same
:class:`~rag.index.ingest.Ingestor` as ``rag ingest``. Small batches are awaited by the request; large ones
answer 202 and are followed at ``GET /jobs/{id}``. A job that fails publishes nothing, so the previous
index version keeps serving. The job table is in memory (the index itself is durable)."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from rag.index.ingest import IngestReport

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
IngestFn = Callable[[ProgressFn], IngestReport]


class JobState(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


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

    def submit(self, tenant: str, documents: int, deletes: int, work: IngestFn) -> tuple[Job, Future[Job]]:
        job = Job(uuid.uuid4().hex, tenant, documents, deletes)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self._keep:  # forget the oldest finished job
                oldest = next((j for j in self._jobs.values() if j.finished_at), None)
                if oldest is None:
                    break
                del self._jobs[oldest.id]
        return job, self._thread.submit(self._run, job, work)

    def _run(self, job: Job, work: IngestFn) -> Job:
        job.state, job.started_at = JobState.RUNNING, time.time()

        def progress(done: int, total: int) -> None:
            job.chunks_done, job.chunks_total = done, total

        try:
            job.report = work(progress)
            job.chunks_total = max(job.chunks_total, job.report.chunks_embedded)
            job.chunks_done = job.chunks_total
            job.state = JobState.SUCCEEDED
            log.info("job %s: %s published", job.id, job.report.version)
        except Exception as exc:
            job.error = f"{type(exc).__name__}: {exc}"
            job.state = JobState.FAILED
            log.exception("job %s failed; the previous index version keeps serving", job.id)
        finally:
            job.finished_at = time.time()
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def close(self) -> None:
        self._thread.shutdown(wait=False, cancel_futures=True)
