"""The search pipeline: one object owns the order of steps and times each of them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from rag.dense.embedder import Embedder
from rag.fusion import fuse
from rag.index.snapshot import IndexSnapshot
from rag.rerank.cross_encoder import Reranker, rerank
from rag.retrieval.plan import QueryPlan
from rag.retrieval.retrievers import BM25Retriever, DenseRetriever
from rag.types import Hit, Result


@dataclass(frozen=True, slots=True)
class Degradation:
    step: str
    reason: str


@dataclass(slots=True)
class SearchOutcome:
    hits: list[Hit]
    timings_ms: dict[str, float] = field(default_factory=dict)
    rerank_pairs: int = 0
    degraded: list[Degradation] = field(default_factory=list)


class StepFailed(RuntimeError):
    """A pipeline step failed; the message carries the step's name."""


class SearchPipeline:
    def __init__(
        self,
        snapshot: IndexSnapshot,
        embedder: Embedder | None,
        dense: DenseRetriever | None,
        reranker: Reranker | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.embedder = embedder
        self.bm25 = BM25Retriever(snapshot)
        self.dense = dense
        self.reranker = reranker

    @contextmanager
    def _step(self, name: str, timings: dict[str, float]) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        except Exception as exc:
            raise StepFailed(f"step {name!r} failed: {exc}") from exc
        finally:
            timings[name] = (time.perf_counter() - start) * 1000.0

    def search(self, query: str, plan: QueryPlan) -> SearchOutcome:
        outcome = SearchOutcome(hits=[])
        t = outcome.timings_ms
        lists: dict[str, list[Hit]] = {}
        if "bm25" in plan.retrievers:
            with self._step("retrieve.bm25", t):
                lists["bm25"] = self.bm25.retrieve(query, plan.candidates)
        if "dense" in plan.retrievers:
            if self.dense is None or self.embedder is None:
                outcome.degraded.append(Degradation("retrieve.dense", "no dense index or embedder"))
            else:
                with self._step("embed", t):
                    vector = self.embedder.embed([query])[0]
                with self._step("retrieve.dense", t):
                    lists["dense"] = self.dense.retrieve(
                        vector, plan.candidates, dims=plan.dims, prefetch=plan.prefetch, rescore=plan.rescore
                    )
        with self._step("fuse", t):
            hits = (
                next(iter(lists.values()))
                if len(lists) == 1
                else fuse(plan.fusion, lists, plan.weights, rrf_k=plan.rrf_k)
            )
        if plan.rerank_depth > 0:
            if self.reranker is None:
                outcome.degraded.append(Degradation("rerank", "no reranker configured (RAG_RERANKER_MODEL)"))
            else:
                with self._step("rerank", t):
                    head = hits[: plan.rerank_depth]
                    scores = self.reranker.score(query, [self.passage(h) for h in head])
                    outcome.rerank_pairs = len(head)
                    hits = rerank(
                        hits,
                        np.asarray(scores),
                        depth=len(head),
                        first_stage_weight=self.reranker.first_stage_weight,
                        rrf_k=plan.rrf_k,
                    )
        outcome.hits = hits
        return outcome

    def passage(self, hit: Hit) -> str:
        return self.snapshot.chunk(hit.chunk_id).passage

    def results(self, hits: list[Hit], top_k: int) -> list[Result]:
        out = []
        for rank, hit in enumerate(hits[:top_k], start=1):
            chunk = self.snapshot.chunk(hit.chunk_id)
            out.append(Result(hit.doc_id, hit.score, rank, chunk.title, chunk.text, hit.chunk_id))
        return out
