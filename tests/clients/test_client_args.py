"""A client refuses bad arguments when built or called, before anything is sent, naming the value."""

from __future__ import annotations

import pytest

from rag.clients import RagClient, Timeouts


def test_bad_construction_arguments_are_refused_naming_them() -> None:
    with pytest.raises(ValueError, match=r"base_url must be an http\(s\) URL .* got 'localhost:8000'"):
        RagClient("localhost:8000", "key")
    with pytest.raises(ValueError, match="api_key must be a tenant API key"):
        RagClient("http://localhost:8000", "  ")
    with pytest.raises(ValueError, match=r"read_s must be > 0 seconds, got 0"):
        Timeouts(read_s=0)


def test_bad_call_arguments_are_refused_before_sending() -> None:
    with (
        RagClient("http://127.0.0.1:9") as anonymous,  # health/ready need no key; queries do
        pytest.raises(ValueError, match="this call needs the tenant API key"),
    ):
        anonymous.query("x")
    with RagClient("http://127.0.0.1:9", "key") as client:
        with pytest.raises(ValueError, match=r"use the keyword argument for \['top_k'\]"):
            client.query("x", fields={"top_k": 3})
        with pytest.raises(ValueError, match=r"timeout_s must be > 0 seconds, got -1"):
            client.query("x", timeout_s=-1)
