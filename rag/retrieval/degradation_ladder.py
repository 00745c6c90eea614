"""The degradation ladder: what a guarded run gives up, rung by rung, so that it still answers within its
deadline when a dependency is slow, failing or refused by its breaker — and how each rung reads in
``degraded``. Top rung first:

1. the rerank cut to the pairs that fit (``shallower``), or skipped (``deadline``: would not fit;
   ``timeout``, ``error``, ``breaker_open``): the first-stage order stands;
2. the dense search at the lowest Matryoshka dimension, without the full-dimension rescore
   (``lower_dims``), when the planned search would not fit;
3. BM25 alone (``bm25_only``) when dense retrieval is unavailable (BM25 stands in when only dense was
   planned);
4. :class:`RetrievalUnavailable` when no retriever is left; the service may still answer from its cache
   (``cache_only``).

Under load a model step that would fit alone but not behind its queue is ``shed`` at admission (or gives
up while queued): the next rung answers at once. BM25 is the floor: its work is small and bounded and
never queues behind a model (:class:`~rag.service.batching.BatchedCompute`); only when even it cannot
answer in time is the request refused (503, ``Retry-After`` from the CPU pool's drain time).

The rungs are decided here, as functions of the deadline and the step-cost estimates;
:class:`~rag.retrieval.pipeline_run.PipelineRun` applies them in order, and
:class:`~rag.retrieval.step_runner.StepRunner` records a step that did not start or failed.
"""

from __future__ import annotations

from rag.dense.matryoshka import MATRYOSHKA_DIMS
from rag.errors import RagError
from rag.resilience.breaker import BreakerOpen
from rag.resilience.deadline import Deadline
from rag.resilience.dependency_call import QueueTimeout
from rag.retrieval.rerank_depth import fitted_depth
from rag.types import Degradation, DegradationCode, Step, StepKey

DENSE_UNAVAILABLE = Degradation(
    StepKey(Step.RETRIEVE_DENSE), DegradationCode.UNAVAILABLE, "no dense index or embedder"
)
BM25_ONLY = Degradation(
    StepKey(Step.RETRIEVE), DegradationCode.BM25_ONLY, "dense retrieval unavailable; answered by BM25 alone"
)
RERANK_NOT_CONFIGURED = Degradation(
    StepKey(Step.RERANK), DegradationCode.NOT_CONFIGURED, "no reranker configured (RAG_RERANKER_MODEL)"
)


def rerank_unvalidated(reason: str) -> Degradation:
    """A configured reranker refused for this collection (:func:`rag.rerank.domain.admit`)."""
    return Degradation(StepKey(Step.RERANK), DegradationCode.UNVALIDATED, reason)


class RetrievalUnavailable(RagError, RuntimeError):
    """The last rung: every retriever of the plan failed or was skipped; ``degraded`` says why for each.
    ``retry_after_s``: when the work queued now will have drained (the ``Retry-After`` of the 503)."""

    def __init__(self, degraded: list[Degradation], retry_after_s: int = 1) -> None:
        super().__init__("; ".join(f"{d.step}: {d.reason}" for d in degraded) or "no retriever ran")
        self.degraded = degraded
        self.retry_after_s = retry_after_s


def shallower_rerank(
    depth: int, per_pair_s: float, deadline: Deadline, reserve_s: float
) -> tuple[int, Degradation | None]:
    """The rerank depth that fits in the time left (:func:`~rag.retrieval.rerank_depth.fitted_depth`),
    with a ``shallower`` degradation when it is less than ``depth``."""
    remaining_s = deadline.remaining_s()
    fit = fitted_depth(depth, remaining_s, reserve_s, per_pair_s)
    if fit == depth:
        return depth, None
    why = Degradation(
        StepKey(Step.RERANK),
        DegradationCode.SHALLOWER,
        f"~{per_pair_s * 1000:.1f} ms per pair, {remaining_s * 1000:.0f} ms left: "
        f"reranked the top {fit} of {depth}",
    )
    return fit, why


def lower_dims(
    planned: int | None, need_s: float, deadline: Deadline, reserve_s: float
) -> tuple[int, Degradation] | None:
    """The lower-dims rung: when embedding and searching at the ``planned`` dimension (None: full) need
    more than the time left, the lowest Matryoshka dimension (searched without the rescore) and why;
    None when the planned search fits, or is at the lowest dimension already."""
    lowest = MATRYOSHKA_DIMS[0]
    if deadline.fits(need_s, reserve_s=reserve_s) or planned == lowest:
        return None
    why = Degradation(
        StepKey(Step.RETRIEVE_DENSE),
        DegradationCode.LOWER_DIMS,
        f"~{need_s * 1000:.0f} ms needed at {planned or 'full'} dims, "
        f"{deadline.remaining_s() * 1000:.0f} ms left; searched at {lowest} dims",
    )
    return lowest, why


FLOOR_GRACE = 0.1  # the share of the deadline the floor may run past it: the bound p99 is held to


def floor_grace_s(deadline: Deadline | None) -> float:
    """How far past ``deadline`` the floor (the query's own BM25 retrieval) may run: an answer a few
    milliseconds late beats a 503 on time, within the latency objective (p99 ≤ deadline × 1.1)."""
    return deadline.budget_s * FLOOR_GRACE if deadline is not None else 0.0


def shed(step: StepKey, queued_s: float, cost_s: float, deadline: Deadline) -> Degradation:
    """A step given up at admission: it would fit in the time left, but not behind the queue in front of
    its dependency (load: the cheaper rung answers at once instead of queueing into a timeout)."""
    left_ms = deadline.remaining_s() * 1000
    return Degradation(
        step,
        DegradationCode.SHED,
        f"~{queued_s * 1000:.0f} ms queued ahead + ~{cost_s * 1000:.0f} ms, {left_ms:.0f} ms left (load)",
    )


def not_started(step: StepKey, cost_s: float, deadline: Deadline) -> Degradation:
    """A step skipped because its estimated cost does not fit in the time left (``deadline``)."""
    left_ms = deadline.remaining_s() * 1000
    return Degradation(
        step, DegradationCode.DEADLINE, f"~{cost_s * 1000:.0f} ms needed, {left_ms:.0f} ms left"
    )


def failure_degradation(step: StepKey, cause: BaseException | None, timeout_s: float | None) -> Degradation:
    """How a failed step reads in ``degraded``: an open breaker, a timeout, or an error."""
    if isinstance(cause, BreakerOpen):
        return Degradation(step, DegradationCode.BREAKER_OPEN, str(cause))
    if isinstance(cause, QueueTimeout):
        return Degradation(step, DegradationCode.SHED, f"gave up: {cause}")
    if isinstance(cause, TimeoutError):
        limit = f" after {timeout_s * 1000:.0f} ms" if timeout_s is not None else ""
        return Degradation(step, DegradationCode.TIMEOUT, f"timed out{limit} (deadline)")
    return Degradation(step, DegradationCode.ERROR, f"{type(cause).__name__}: {cause}"[:200])
