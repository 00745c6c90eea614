"""The degradation ladder at the pipeline level (no HTTP): with real components — BM25, the embedded Qdrant
store behind :class:`UnreachableStore`, the hash embedder and the overlap reranker — a guarded run steps
down one rung at a time and says so in ``degraded``:

1. rerank shortened (``shallower``) or skipped (``deadline``, ``error``, ``timeout``, ``breaker_open``):
   the first-stage order stands;
2. dense search at a lower Matryoshka dimension (``lower_dims``) when the planned one does not fit;
3. BM25 alone (``bm25_only``) when dense retrieval fails, is refused by its breaker or does not fit;
4. :class:`RetrievalUnavailable` when no retriever is left.

Each rung's results are checked against an unguarded run of the plan that rung amounts to (the same plan
→ the same ranking). No timed assertions: deadlines run on a frozen clock (the time left is what the test
says), step costs are set, breakers are forced open; the one timeout is a hung reranker's.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pytest

from rag.config import Settings, load_settings
from rag.dense.hashing import HashEmbedder
from rag.rerank.cross_encoder import Pair, Reranker
from rag.resilience.breaker import Breaker, BreakerPolicy, State
from rag.resilience.deadline import Deadline, StepCosts
from rag.retrieval.degradation_ladder import RetrievalUnavailable
from rag.retrieval.pipeline import SearchPipeline
from rag.retrieval.plan import QueryPlan
from rag.retrieval.retrievers import DenseRetriever
from rag.retrieval.step_runner import Guards, SearchOutcome, StepEvent
from rag.runtime import Runtime
from rag.testing.fakes import OverlapReranker, ThreadedCompute
from rag.testing.faults import HangingReranker, UnreachableStore
from rag.types import Document
from tests.conftest import make_ingestor

T = TypeVar("T")

DIM = 256  # the full dimension; 64 is the lowest Matryoshka prefix
QUERY = "which animals hunt mice at night"
ANIMALS = ["cat", "owl", "fox", "hawk", "snake", "weasel", "dog", "bat", "heron", "badger"]
HABITS = [
    "hunts mice at night",
    "hunts mice by day",
    "sleeps through the night",
    "eats insects at dusk",
    "catches fish in rivers",
]
DOCS = [
    Document(f"{animal}-{j}", f"The {animal} {habit}, its {j}th habit.", f"{animal.title()} {j}")
    for animal in ANIMALS
    for j, habit in enumerate(HABITS)
]
HYBRID = QueryPlan(retrievers=("bm25", "dense"), top_k=10, candidates=30, dims=None, rerank_depth=20)


# -- the rig ---------------------------------------------------------------------------------------------
class FailingReranker(OverlapReranker):
    """A reranker whose every call fails (a model server answering 500)."""

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        self.calls.append(len(pairs))
        raise RuntimeError("reranker failure injected by the test")


@dataclass
class Rig:
    runtime: Runtime
    store: UnreachableStore
    embedder: HashEmbedder

    def pipeline(self, reranker: Reranker | None = None, *, dense: bool = True) -> SearchPipeline:
        retriever: DenseRetriever | None = self.runtime.pipeline.dense if dense else None
        compute = ThreadedCompute(self.embedder, reranker)
        return SearchPipeline(self.runtime.snapshot, self.embedder, retriever, reranker, compute)


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    """One collection for the module (ingesting is the slow part); each test builds its own pipeline."""
    with pytest.MonkeyPatch.context() as env:
        for key in [k for k in __import__("os").environ if k.startswith("RAG_")]:
            env.delenv(key)
        data_dir = tmp_path_factory.mktemp("ladder") / "data"
        settings: Settings = load_settings(
            data_dir=data_dir, embedder_model=f"hash:{DIM}", collection="ladder"
        )
    ingestor, store = make_ingestor(settings)
    ingestor.ingest(DOCS)
    unreachable = UnreachableStore(store, connect_timeout_s=0.0)
    embedder = HashEmbedder(DIM)
    runtime = Runtime.open(settings, store=unreachable, embedder=embedder, load_reranker=False)  # type: ignore[arg-type]
    yield Rig(runtime, unreachable, embedder)
    runtime.close()


@pytest.fixture
def rig(ingested: Rig) -> Iterator[Rig]:
    """The module's collection, with the vector store reachable again after each test."""
    yield ingested
    ingested.store.down = False


class FrozenClock:
    """A clock that moves only when told: a deadline on it has exactly the time left that the test
    gives it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guards(
    left_s: float = 60.0,
    *,
    costs: dict[str, float] | None = None,
    open_breakers: Sequence[str] = (),
    breakers: dict[str, Breaker] | None = None,
    clock: FrozenClock | None = None,
) -> Guards:
    """Guards whose deadline has ``left_s`` left (and keeps it: a frozen clock), whose cost model
    estimates each step of ``costs`` at its value (seconds; per pair for ``rerank``), and whose breakers
    in ``open_breakers`` are forced open."""
    step_costs = StepCosts(alpha=1.0)
    for step, seconds in (costs or {}).items():
        step_costs.observe(step, seconds)
    all_breakers = {name: Breaker(name, clock=FrozenClock()) for name in ("embedder", "qdrant", "reranker")}
    all_breakers.update(breakers or {})
    for name in open_breakers:
        all_breakers[name].force(State.OPEN, "forced open by the test")
    return Guards(Deadline(left_s, clock=clock or FrozenClock()), all_breakers, step_costs)


def codes(outcome_or_error: SearchOutcome | RetrievalUnavailable) -> list[tuple[str, str]]:
    """``degraded`` as (step, code) wire strings, in the order recorded."""
    return [(str(d.step), str(d.code)) for d in outcome_or_error.degraded]


def ranking(outcome: SearchOutcome) -> list[tuple[str, float]]:
    return [(h.doc_id, h.score) for h in outcome.hits]


def run(pipeline: SearchPipeline, plan: QueryPlan, g: Guards | None = None, **kw: Any) -> SearchOutcome:
    return asyncio.run(pipeline.run(QUERY, plan, guards=g, **kw))


# -- the top of the ladder: nothing degrades ---------------------------------------------------------------
def test_with_time_to_spare_nothing_degrades_and_the_ranking_is_the_unguarded_one(rig: Rig) -> None:
    reranker = OverlapReranker()
    pipeline = rig.pipeline(reranker)
    guarded = run(pipeline, HYBRID, guards())
    assert codes(guarded) == []
    assert ranking(guarded) == ranking(run(pipeline, HYBRID))
    assert guarded.rerank_pairs == 20 and reranker.calls == [20, 20]
    assert {"retrieve.bm25", "embed", "retrieve.dense", "fuse", "rerank"} <= set(guarded.timings_ms)
    # the rerank changes the first-stage order (else the rungs below could not tell them apart)
    assert ranking(guarded) != ranking(run(pipeline, HYBRID.with_(rerank_depth=0)))


# -- rung 1: the rerank is shortened or skipped ------------------------------------------------------------
def test_a_short_deadline_reranks_only_the_pairs_that_fit(rig: Rig) -> None:
    """1 s per pair and 8.5 s left: 8 pairs fit (of 20 planned), at least the useful minimum (5)."""
    reranker = OverlapReranker()
    pipeline = rig.pipeline(reranker)
    outcome = run(pipeline, HYBRID, guards(8.5, costs={"rerank": 1.0}))
    assert codes(outcome) == [("rerank", "shallower")]
    assert "reranked the top 8 of 20" in outcome.degraded[0].reason
    assert outcome.rerank_pairs == 8 and reranker.calls == [8]
    assert ranking(outcome) == ranking(run(pipeline, HYBRID.with_(rerank_depth=8)))


def test_a_deadline_too_short_for_a_useful_rerank_skips_it(rig: Rig) -> None:
    """4 pairs fit: fewer than the useful minimum, so the rerank does not start; the first stage stands."""
    reranker = OverlapReranker()
    pipeline = rig.pipeline(reranker)
    outcome = run(pipeline, HYBRID, guards(4.5, costs={"rerank": 1.0}))
    assert codes(outcome) == [("rerank", "deadline")]
    assert outcome.rerank_pairs == 0 and reranker.calls == []
    assert "rerank" not in outcome.timings_ms
    assert ranking(outcome) == ranking(run(pipeline, HYBRID.with_(rerank_depth=0)))


def test_a_failing_reranker_leaves_the_first_stage_order(rig: Rig) -> None:
    reranker = FailingReranker()
    pipeline = rig.pipeline(reranker)
    outcome = run(pipeline, HYBRID, guards())
    assert codes(outcome) == [("rerank", "error")]
    assert "reranker failure injected" in outcome.degraded[0].reason
    assert outcome.rerank_pairs == 0 and reranker.calls == [20]
    assert ranking(outcome) == ranking(run(rig.pipeline(None), HYBRID.with_(rerank_depth=0)))


def test_a_hung_reranker_times_out_at_the_deadline(rig: Rig) -> None:
    """The rerank gets the time left as its timeout and is abandoned after it. The first stage runs with
    a minute to spare; once fused, the deadline is nearly spent (0.3 s left)."""
    reranker = HangingReranker(hang_s=10.0)
    pipeline = rig.pipeline(reranker)
    clock = FrozenClock()

    def spend_after_fusion(event: StepEvent) -> None:
        if str(event.step) == "fuse":
            clock.now += 60.0 - 0.3

    async def main() -> SearchOutcome:
        reranker.hang()
        try:
            return await pipeline.run(QUERY, HYBRID, on_step=spend_after_fusion, guards=guards(clock=clock))
        finally:
            reranker.recover()  # the abandoned call's thread ends now, not after hang_s

    outcome = asyncio.run(main())
    assert codes(outcome) == [("rerank", "timeout")]
    assert outcome.rerank_pairs == 0
    assert ranking(outcome) == ranking(run(pipeline, HYBRID.with_(rerank_depth=0)))


def test_an_open_reranker_breaker_skips_the_rerank_without_calling_it(rig: Rig) -> None:
    reranker = OverlapReranker()
    pipeline = rig.pipeline(reranker)
    outcome = run(pipeline, HYBRID, guards(open_breakers=["reranker"]))
    assert codes(outcome) == [("rerank", "breaker_open")]
    assert reranker.calls == []
    assert ranking(outcome) == ranking(run(pipeline, HYBRID.with_(rerank_depth=0)))


def test_repeated_reranker_failures_open_its_breaker(rig: Rig) -> None:
    """Failing runs fill the breaker's window; once it opens, the next run skips the reranker without
    calling it — the same first-stage answer, from ``error`` to ``breaker_open``."""
    reranker = FailingReranker()
    policy = BreakerPolicy(min_calls=2, window_calls=2, open_s=60.0)
    breaker = Breaker("reranker", policy, clock=FrozenClock())
    pipeline = rig.pipeline(reranker)
    outcomes = [run(pipeline, HYBRID, guards(breakers={"reranker": breaker})) for _ in range(3)]
    assert [codes(o) for o in outcomes] == [
        [("rerank", "error")],
        [("rerank", "error")],
        [("rerank", "breaker_open")],
    ]
    assert breaker.state is State.OPEN and reranker.calls == [20, 20]
    assert ranking(outcomes[0]) == ranking(outcomes[2])


def test_no_reranker_configured_is_said_once(rig: Rig) -> None:
    outcome = run(rig.pipeline(None), HYBRID, guards())
    assert codes(outcome) == [("rerank", "not_configured")]
    assert ranking(outcome) == ranking(run(rig.pipeline(None), HYBRID.with_(rerank_depth=0)))


# -- rung 2: a lower Matryoshka dimension ------------------------------------------------------------------
def test_a_dense_search_that_does_not_fit_runs_at_the_lowest_dimension(rig: Rig) -> None:
    """The full-dimension search is estimated at 10 s with 2 s left; at 64 dims it costs 10 ms: the
    search runs at 64 dims without the full-dimension rescore, and the rest of the plan runs."""
    reranker = OverlapReranker()
    pipeline = rig.pipeline(reranker)
    events: list[StepEvent] = []
    costs = {"retrieve.dense@full": 10.0, "retrieve.dense@64": 0.01}
    outcome = run(pipeline, HYBRID, guards(2.0, costs=costs), on_step=events.append)
    assert codes(outcome) == [("retrieve.dense", "lower_dims")]
    assert "searched at 64 dims" in outcome.degraded[0].reason
    dense = [e for e in events if str(e.step) == "retrieve.dense"]
    assert len(dense) == 1 and dense[0].detail["dims"] == 64
    assert outcome.rerank_pairs == 20
    assert ranking(outcome) == ranking(run(pipeline, HYBRID.with_(dims=64, rescore=False)))


def test_a_plan_already_at_the_lowest_dimension_is_not_lowered(rig: Rig) -> None:
    """At 64 dims there is no lower rung: a search that does not fit leaves BM25 (the next rung)."""
    plan = HYBRID.with_(dims=64, rerank_depth=0)
    outcome = run(rig.pipeline(None), plan, guards(2.0, costs={"retrieve.dense@64": 10.0}))
    assert ("retrieve.dense", "lower_dims") not in codes(outcome)
    assert codes(outcome) == [("embed", "deadline"), ("retrieve", "bm25_only")]


# -- rung 3: BM25 alone ------------------------------------------------------------------------------------
BM25_PLAN = HYBRID.with_(retrievers=("bm25",))


def test_an_unreachable_vector_store_leaves_bm25(rig: Rig) -> None:
    pipeline = rig.pipeline(OverlapReranker())
    rig.store.down = True
    outcome = run(pipeline, HYBRID, guards())
    assert codes(outcome) == [("retrieve.dense", "error"), ("retrieve", "bm25_only")]
    assert "ConnectionError" in outcome.degraded[0].reason
    assert "retrieve.dense" not in outcome.timings_ms
    rig.store.down = False
    assert ranking(outcome) == ranking(run(pipeline, BM25_PLAN))  # reranked as planned, from BM25's list


def test_an_open_qdrant_breaker_leaves_bm25_without_searching(rig: Rig) -> None:
    pipeline = rig.pipeline(OverlapReranker())
    rig.store.down = True  # a search would fail with "error": the breaker refuses before it
    outcome = run(pipeline, HYBRID, guards(open_breakers=["qdrant"]))
    assert codes(outcome) == [("retrieve.dense", "breaker_open"), ("retrieve", "bm25_only")]
    rig.store.down = False
    assert ranking(outcome) == ranking(run(pipeline, BM25_PLAN))


def test_an_open_embedder_breaker_leaves_bm25_through_prepare_embed_execute(rig: Rig) -> None:
    """The service's order: ``prepare``, ``embed()`` (for the semantic cache), then ``execute()``. The
    embed refused by its breaker gives no vector, and the run that reuses it answers by BM25."""
    pipeline = rig.pipeline(OverlapReranker())

    async def main() -> tuple[np.ndarray | None, SearchOutcome]:
        prepared = pipeline.prepare(QUERY, HYBRID, guards=guards(open_breakers=["embedder"]))
        vector = await prepared.embed()
        return vector, await prepared.execute()

    vector, outcome = asyncio.run(main())
    assert vector is None and outcome.embedded_texts == 0
    assert codes(outcome) == [("embed", "breaker_open"), ("retrieve", "bm25_only")]
    assert ranking(outcome) == ranking(run(pipeline, BM25_PLAN))


def test_prepare_embed_execute_embeds_once(rig: Rig) -> None:
    pipeline = rig.pipeline(OverlapReranker())
    events: list[StepEvent] = []

    async def main() -> SearchOutcome:
        prepared = pipeline.prepare(QUERY, HYBRID, on_step=events.append, guards=guards())
        assert await prepared.embed() is not None
        return await prepared.execute()

    outcome = asyncio.run(main())
    assert codes(outcome) == [] and outcome.embedded_texts == 1
    assert [str(e.step) for e in events].count("embed") == 1
    assert ranking(outcome) == ranking(run(pipeline, HYBRID))


def test_an_embedding_that_does_not_fit_leaves_bm25(rig: Rig) -> None:
    pipeline = rig.pipeline(OverlapReranker())
    outcome = run(pipeline, HYBRID, guards(2.0, costs={"embed": 5.0}))
    assert codes(outcome) == [("embed", "deadline"), ("retrieve", "bm25_only")]
    assert ranking(outcome) == ranking(run(pipeline, BM25_PLAN))


def test_a_dense_only_plan_falls_back_to_bm25(rig: Rig) -> None:
    """Only dense was asked for: when it fails, BM25 stands in rather than nothing."""
    pipeline = rig.pipeline(None)
    plan = HYBRID.with_(retrievers=("dense",), rerank_depth=0)
    rig.store.down = True
    outcome = run(pipeline, plan, guards())
    assert codes(outcome) == [("retrieve.dense", "error"), ("retrieve", "bm25_only")]
    assert "retrieve.bm25" in outcome.timings_ms
    rig.store.down = False
    assert ranking(outcome) == ranking(run(pipeline, BM25_PLAN.with_(rerank_depth=0)))


def test_no_dense_index_leaves_bm25(rig: Rig) -> None:
    pipeline = rig.pipeline(None, dense=False)
    outcome = run(pipeline, HYBRID.with_(rerank_depth=0), guards())
    assert codes(outcome) == [("retrieve.dense", "unavailable"), ("retrieve", "bm25_only")]
    assert ranking(outcome) == ranking(run(pipeline, BM25_PLAN.with_(rerank_depth=0)))


# -- rung 4: nothing can retrieve --------------------------------------------------------------------------
def test_a_bm25_that_does_not_fit_leaves_the_dense_answer(rig: Rig) -> None:
    """BM25 is estimated at 10 s with 1 s left: it does not start; it runs beside the embedding, not
    after it, so the embedding keeps its time and dense answers."""
    outcome = run(rig.pipeline(OverlapReranker()), HYBRID, guards(1.0, costs={"retrieve.bm25": 10.0}))
    assert codes(outcome) == [("retrieve.bm25", "deadline")]
    assert outcome.hits


def test_when_no_retriever_fits_the_run_is_unavailable(rig: Rig) -> None:
    """BM25 and the embedding are each estimated at 10 s with 1 s left: neither starts."""
    reranker = OverlapReranker()
    with pytest.raises(RetrievalUnavailable) as raised:
        run(rig.pipeline(reranker), HYBRID, guards(1.0, costs={"retrieve.bm25": 10.0, "embed": 10.0}))
    assert sorted(codes(raised.value)) == [("embed", "deadline"), ("retrieve.bm25", "deadline")]
    assert "retrieve.bm25" in str(raised.value) and reranker.calls == []


def test_dense_failing_and_bm25_not_fitting_is_unavailable(rig: Rig) -> None:
    rig.store.down = True
    with pytest.raises(RetrievalUnavailable) as raised:
        run(rig.pipeline(None), HYBRID, guards(1.0, costs={"retrieve.bm25": 10.0}, open_breakers=["qdrant"]))
    found = codes(raised.value)
    assert ("retrieve.bm25", "deadline") in found
    assert ("retrieve", "bm25_only") not in found  # no rung left to stand on


def test_a_dense_only_plan_whose_bm25_stand_in_does_not_fit_is_unavailable(rig: Rig) -> None:
    rig.store.down = True
    plan = HYBRID.with_(retrievers=("dense",), rerank_depth=0)
    with pytest.raises(RetrievalUnavailable) as raised:
        run(rig.pipeline(None), plan, guards(1.0, costs={"retrieve.bm25": 10.0}))
    assert codes(raised.value) == [("retrieve.dense", "error"), ("retrieve.bm25", "deadline")]


def test_without_guards_a_failure_is_not_a_rung_but_an_error(rig: Rig) -> None:
    """The CLI and evaluation run unguarded: a failing step fails the run, naming the step."""
    rig.store.down = True
    with pytest.raises(Exception, match=r"retrieve\.dense") as raised:
        run(rig.pipeline(None), HYBRID)
    assert not isinstance(raised.value, RetrievalUnavailable)
