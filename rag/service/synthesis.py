"""The optional LLM answer from the retrieved passages (``answer: true``).

:class:`AnswerSynthesis` owns the chat client (``RAG_LLM_URL``) and the cache of synthesised answers.
Order (invariants): a reused answer first — the same normalised text answered from the same passages
(L1 semantics: a semantic neighbour's answer is never reused, its passages are synthesised afresh); else
priced first and refused, with a ``budget`` degradation, when it could take the tenant past its budget;
else asked within the deadline behind the ``llm`` breaker and booked through :meth:`CostLedger.book`
(the one place work is charged). On any failure or refusal the passages stand alone: synthesis never
fails a query.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from rag import metrics
from rag.cache.answers import AnswerCache
from rag.cache.keys import Namespace
from rag.config import Settings
from rag.llm import ChatClient, Synthesizer, request_tokens, with_usage
from rag.resilience.board import BreakerBoard
from rag.resilience.deadline import Deadline
from rag.retrieval.degradation_ladder import failure_degradation
from rag.retrieval.step_runner import StepEvent, StepListener
from rag.routing.costs import Usage, budget_refusal, llm_money
from rag.service.answer import AnswerCost, SynthesizedAnswer
from rag.service.ledger import CostLedger
from rag.types import Degradation, DegradationCode, Dependency, Result, Step, StepKey

ANSWER_SHARE_OF_L1 = 4  # synthesized answers may hold a quarter of the L1's byte bound
SYNTHESIZE = StepKey(Step.SYNTHESIZE)


@dataclass(frozen=True, slots=True)
class Synthesized:
    """What a synthesis adds to an answer: the answer (None: the passages stand alone), the cost with
    its tokens and money, and why it is missing when it is."""

    answer: SynthesizedAnswer | None
    cost: AnswerCost
    degraded: tuple[Degradation, ...] = ()


class AnswerSynthesis:
    def __init__(self, settings: Settings, ledger: CostLedger, breakers: BreakerBoard) -> None:
        self.llm: Synthesizer | None = (
            ChatClient(
                settings.llm_url,
                settings.llm_model,
                api_key=settings.llm_api_key,
                max_tokens=settings.llm_max_tokens,
                max_passages=settings.llm_passages,
            )
            if settings.llm_url
            else None
        )
        # reused for the same normalised text only (L1), bounded like the L1
        self.answers = (
            AnswerCache(
                settings.cache_l1_entries,
                settings.cache_ttl_s,
                max_bytes=max(settings.cache_l1_max_bytes // ANSWER_SHARE_OF_L1, 1),
            )
            if settings.cache_enabled
            else None
        )
        self._timeout_s = settings.llm_timeout_ms / 1000.0
        self._ledger = ledger
        self._breakers = breakers

    async def synthesize(
        self,
        tenant: str,
        ns: Namespace,
        query: str,
        results: Sequence[Result],
        cost: AnswerCost,
        deadline: Deadline,
        record: StepListener,
    ) -> Synthesized:
        """The answer to ``query`` from ``results`` within ``deadline``, and ``cost`` with its share."""
        if self.llm is None:
            why = Degradation(SYNTHESIZE, DegradationCode.NOT_CONFIGURED, "no LLM configured (RAG_LLM_URL)")
            return Synthesized(None, cost, (why,))
        llm = self.llm
        key = AnswerCache.key(ns, query, llm.model, results) if self.answers is not None else None
        reused = self.answers.get(key) if self.answers is not None and key is not None else None
        if reused is not None:
            metrics.LLM_REQUESTS.labels("reused").inc()
            record(StepEvent(SYNTHESIZE, 0.0, {"model": reused.model, "reused": True}))
            return Synthesized(SynthesizedAnswer.of(reused, reused=True), cost)
        prompt, completion = request_tokens(
            query, results, max_passages=llm.max_passages, max_tokens=llm.max_tokens
        )
        ledger = self._ledger
        refusal = budget_refusal(ledger.budgets.state(tenant), llm_money(prompt, completion, ledger.prices))
        if refusal is not None:
            metrics.LLM_REQUESTS.labels("budget").inc()
            metrics.BUDGET_EXCEEDED.labels(tenant, "no_synthesis").inc()
            why = Degradation(SYNTHESIZE, DegradationCode.BUDGET, f"no answer synthesized: tenant {refusal}")
            return Synthesized(None, cost, (why,))
        timeout = min(self._timeout_s, deadline.timeout_s(reserve_s=0.005))
        t0 = time.perf_counter()
        try:
            out = await self._breakers[Dependency.LLM].call(
                lambda: llm.synthesize(query, results), timeout_s=timeout
            )
        except Exception as exc:  # unbooked: an endpoint that failed reported no usage
            failure = failure_degradation(SYNTHESIZE, exc, timeout)
            metrics.LLM_REQUESTS.labels(failure.code.value).inc()
            return Synthesized(None, cost, (failure,))
        metrics.LLM_REQUESTS.labels("ok").inc()
        record(StepEvent(SYNTHESIZE, (time.perf_counter() - t0) * 1000.0, {"model": out.model}))
        out = with_usage(out, query, results, llm.max_passages)
        usage = Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens)
        money = ledger.book(tenant, usage).money_total
        if self.answers is not None and key is not None:
            self.answers.put(key, out)
        cost = cost.synthesized(out.prompt_tokens, out.completion_tokens, money, ledger.prices.currency)
        return Synthesized(SynthesizedAnswer.of(out, reused=False), cost)

    def purge(self, tenant: str) -> None:
        if self.answers is not None:
            self.answers.purge(tenant)

    async def close(self) -> None:
        if self.llm is not None:
            await self.llm.close()
