"""Optional answer synthesis through an OpenAI-compatible chat endpoint (``RAG_LLM_URL``, off by default).

The service asks for an answer only when a query sets ``answer: true``; the call runs behind the ``llm``
breaker with its own timeout, and any failure falls back to returning the passages alone. Each call is
priced before it is sent (:func:`request_tokens`: the prompt estimated, the completion at ``max_tokens``)
and refused past the tenant's budget; what it used (:func:`with_usage`: the endpoint's counts, estimated
where it reported none) is booked at the price model's token prices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import httpx
from pydantic import SecretStr

from rag.types import Result

SYSTEM_PROMPT = (
    "Answer the question using only the numbered passages. Cite passages as [n]. "
    "If the passages do not contain the answer, say so."
)


@dataclass(frozen=True, slots=True)
class Synthesis:
    text: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


def build_messages(query: str, results: Sequence[Result], max_passages: int) -> list[dict[str, str]]:
    context = "\n\n".join(
        f"[{i}] {r.title}\n{r.text}".strip() for i, r in enumerate(results[:max_passages], start=1)
    )
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": f"Passages:\n{context}\n\nQuestion: {query}"},
    ]


CHARS_PER_TOKEN = 4  # a common rule of thumb for English text with GPT-style tokenizers


def estimate_tokens(text: str) -> int:
    """A token count for ``text`` without a tokenizer (about four characters per token)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def request_tokens(
    query: str, results: Sequence[Result], *, max_passages: int, max_tokens: int
) -> tuple[int, int]:
    """The most one synthesis may use, before it is sent: (estimated prompt tokens, ``max_tokens``)."""
    messages = build_messages(query, results, max_passages)
    return sum(estimate_tokens(m["content"]) for m in messages), max_tokens


def with_usage(synthesis: Synthesis, query: str, results: Sequence[Result], max_passages: int) -> Synthesis:
    """``synthesis`` with token counts: the endpoint's own, or estimated where it reported none."""
    if synthesis.prompt_tokens and synthesis.completion_tokens:
        return synthesis
    prompt, _ = request_tokens(query, results, max_passages=max_passages, max_tokens=0)
    return replace(
        synthesis,
        prompt_tokens=synthesis.prompt_tokens or prompt,
        completion_tokens=synthesis.completion_tokens or estimate_tokens(synthesis.text),
    )


class Synthesizer(Protocol):
    """What the service needs of a chat model (:class:`ChatClient`; a fake in tests)."""

    model: str
    max_tokens: int
    max_passages: int

    async def synthesize(self, query: str, results: Sequence[Result]) -> Synthesis: ...

    async def close(self) -> None: ...


def parse_completion(body: dict[str, Any]) -> Synthesis:
    try:
        text = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError) as exc:
        raise ValueError(f"not a chat completion: no choices[0].message.content ({exc})") from exc
    if not isinstance(text, str):
        raise ValueError("choices[0].message.content must be a string")
    usage = body.get("usage") or {}
    return Synthesis(
        text,
        str(body.get("model", "")),
        int(usage.get("prompt_tokens", 0)),
        int(usage.get("completion_tokens", 0)),
    )


class ChatClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: SecretStr | None = None,
        max_tokens: int = 256,
        max_passages: int = 5,
    ) -> None:
        headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        # no client-side timeout here: the breaker's timeout (the request's deadline) bounds each call
        self._http = httpx.AsyncClient(base_url=base_url.rstrip("/"), headers=headers, timeout=None)
        self.model = model
        self.max_tokens = max_tokens
        self.max_passages = max_passages

    async def synthesize(self, query: str, results: Sequence[Result]) -> Synthesis:
        response = await self._http.post(
            "/chat/completions",
            json={
                "model": self.model,
                "messages": build_messages(query, results, self.max_passages),
                "max_tokens": self.max_tokens,
                "temperature": 0,
            },
        )
        response.raise_for_status()
        return parse_completion(response.json())

    async def close(self) -> None:
        await self._http.aclose()
