"""The search pipeline: one object owns the order of steps, times each of them and reports each as it
completes.

The pipeline is written once, as a coroutine. Where its work runs is the job of a :class:`Compute`:
:class:`InlineCompute` runs everything in the caller's thread (the CLI and evaluation, through
:meth:`SearchPipeline.search`); the service's compute runs CPU work in threads and micro-batches model
calls across concurrent requests (``rag.service.batching``). Cancelling the coroutine (a client that went
away) stops it at the next step: no later step starts.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol, TypeVar

import numpy as np

from rag.dense.embedder import Embedder
from rag.fusion import fuse
from rag.index.snapshot import IndexSnapshot
from rag.rerank.cross_encoder import Pair, Reranker, rerank
from rag.retrieval.filters import SearchFilter, row_mask
from rag.retrieval.plan import QueryPlan
from rag.retrieval.retrievers import BM25Retriever, DenseRetriever
from rag.types import Hit, Result

T = TypeVar("T")
_thread_loops = threading.local()


@dataclass(frozen=True, slots=True)
class Degradation:
    step: str
    reason: str


@dataclass(frozen=True, slots=True)
class StepEvent:
    """A finished step: its name (``retrieve.bm25``, ``embed``, ``rerank``, …), wall time and details."""

    step: str
    ms: float
    detail: dict[str, Any] = field(default_factory=dict)


StepListener = Callable[[StepEvent], None]


@dataclass(slots=True)
class SearchOutcome:
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank_pairs: int = 0
    embedded_texts: int = 0
    degraded: list[Degradation] = field(default_factory=list)


class StepFailed(RuntimeError):
    """A pipeline step failed; ``step`` names it."""

    def __init__(self, step: str, cause: BaseException) -> None:
        super().__init__(f"step {step!r} failed: {cause}")
        self.step = step


class Compute(Protocol):
    """Where the pipeline's work runs."""

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """CPU work that is not a model call (BM25, the vector search, fusion)."""
        ...

    async def embed_query(self, text: str) -> np.ndarray: ...

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray: ...


class InlineCompute:
    """Everything in the calling thread, one query at a time."""

    def __init__(self, embedder: Embedder | None, reranker: Reranker | None) -> None:
        self.embedder = embedder
        self.reranker = reranker

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    async def embed_query(self, text: str) -> np.ndarray:
        assert self.embedder is not None
        return self.embedder.embed([text])[0]

    async def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        assert self.reranker is not None
        return self.reranker.score_pairs(pairs)


class SearchPipeline:
    def __init__(
        self,
        snapshot: IndexSnapshot,
        embedder: Embedder | None,
        dense: DenseRetriever | None,
        reranker: Reranker | None = None,
        compute: Compute | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.embedder = embedder
        self.bm25 = BM25Retriever(snapshot)
        self.dense = dense
        self.reranker = reranker
        self.compute = compute or InlineCompute(embedder, reranker)

    def search(self, query: str, plan: QueryPlan, flt: SearchFilter | None = None) -> SearchOutcome:
        """Run the pipeline to the end in this thread (no event loop needed by the caller). The thread's
        event loop is kept between calls: creating one per query would cost more than a BM25 search."""
        runner = getattr(_thread_loops, "runner", None)
        if runner is None:
            runner = _thread_loops.runner = asyncio.Runner()
        return runner.run(self.run(query, plan, flt))

    async def run(
        self,
        query: str,
        plan: QueryPlan,
        flt: SearchFilter | None = None,
        on_step: StepListener | None = None,
    ) -> SearchOutcome:
        """The steps, in order: retrieval (BM25 beside embed → dense search), fusion, reranking."""
        outcome = SearchOutcome(hits=[])
        flt = flt or SearchFilter()
        mask = row_mask(self.snapshot, flt)
        retrievals: dict[str, Awaitable[list[Hit]]] = {}
        if "bm25" in plan.retrievers:
            retrievals["bm25"] = self._step(
                "retrieve.bm25",
                outcome,
                on_step,
                self.compute.run(partial(self.bm25.retrieve, query, plan.candidates, mask=mask)),
            )
        if "dense" in plan.retrievers:
            if self.dense is None or self.embedder is None:
                outcome.degraded.append(Degradation("retrieve.dense", "no dense index or embedder"))
            else:
                retrievals["dense"] = self._dense(query, plan, flt, mask, outcome, on_step)
        lists = dict(zip(retrievals, await _all(list(retrievals.values())), strict=True))
        if not lists:  # only dense was asked for, and it is unavailable: BM25 answers instead
            outcome.degraded.append(Degradation("retrieve.dense", "answered by BM25 alone"))
            lists["bm25"] = await self._step(
                "retrieve.bm25",
                outcome,
                on_step,
                self.compute.run(partial(self.bm25.retrieve, query, plan.candidates, mask=mask)),
            )
        hits = await self._step("fuse", outcome, on_step, self.compute.run(_fuse, lists, plan))
        if plan.rerank_depth > 0 and hits:
            if self.reranker is None:
                outcome.degraded.append(Degradation("rerank", "no reranker configured (RAG_RERANKER_MODEL)"))
            else:
                hits = await self._rerank(query, hits, plan, outcome, on_step)
        outcome.hits = hits
        return outcome

    async def _dense(
        self,
        query: str,
        plan: QueryPlan,
        flt: SearchFilter,
        mask: np.ndarray | None,
        outcome: SearchOutcome,
        on_step: StepListener | None,
    ) -> list[Hit]:
        assert self.dense is not None
        vector = await self._step("embed", outcome, on_step, self.compute.embed_query(query))
        outcome.embedded_texts += 1
        dense = self.dense

        def search() -> list[Hit]:
            return dense.retrieve(
                vector,
                plan.candidates,
                dims=plan.dims,
                prefetch=plan.prefetch,
                rescore=plan.rescore,
                flt=flt,
                mask=mask,
            )

        return await self._step(
            "retrieve.dense", outcome, on_step, self.compute.run(search), dims=plan.dims or "full"
        )

    async def _rerank(
        self,
        query: str,
        hits: list[Hit],
        plan: QueryPlan,
        outcome: SearchOutcome,
        on_step: StepListener | None,
    ) -> list[Hit]:
        assert self.reranker is not None
        head = hits[: plan.rerank_depth]
        pairs = [(query, self.passage(h)) for h in head]
        scores = await self._step(
            "rerank", outcome, on_step, self.compute.score_pairs(pairs), pairs=len(pairs)
        )
        outcome.rerank_pairs = len(head)
        return rerank(
            hits,
            np.asarray(scores),
            depth=len(head),
            first_stage_weight=self.reranker.first_stage_weight,
            rrf_k=plan.rrf_k,
        )

    async def _step(
        self,
        name: str,
        outcome: SearchOutcome,
        on_step: StepListener | None,
        work: Awaitable[T],
        **detail: Any,
    ) -> T:
        start = time.perf_counter()
        try:
            result = await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise StepFailed(name, exc) from exc
        ms = (time.perf_counter() - start) * 1000.0
        outcome.timings_ms[name] = ms
        if on_step is not None:
            if isinstance(result, list):
                detail["hits"] = len(result)
            on_step(StepEvent(name, ms, detail))
        return result

    def passage(self, hit: Hit) -> str:
        return self.snapshot.chunk(hit.chunk_id).passage

    def results(self, hits: list[Hit], top_k: int) -> list[Result]:
        """The first ``top_k`` hits as results, with the caller's (unscoped) document ids."""
        out = []
        for rank, hit in enumerate(hits[:top_k], start=1):
            chunk = self.snapshot.chunk(hit.chunk_id)
            out.append(
                Result(chunk.doc_id, hit.score, rank, chunk.title, chunk.text, chunk.chunk_id, chunk.metadata)
            )
        return out


def _fuse(lists: dict[str, list[Hit]], plan: QueryPlan) -> list[Hit]:
    return (
        next(iter(lists.values()))
        if len(lists) == 1
        else fuse(plan.fusion, lists, plan.weights, rrf_k=plan.rrf_k)
    )


async def _all(work: list[Awaitable[T]]) -> list[T]:
    """Run ``work`` concurrently; the first failure (or a cancellation) cancels the rest."""
    if len(work) == 1:
        return [await work[0]]
    tasks = [asyncio.ensure_future(w) for w in work]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        raise
