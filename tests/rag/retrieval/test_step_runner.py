"""The step runner's parts that need no pipeline: CPU timing of a step's work."""

from __future__ import annotations

from rag.retrieval.step_runner import cpu_timed


def test_cpu_timed_reports_thread_cpu() -> None:
    got: list[float] = []

    def work() -> int:
        return sum(i * i for i in range(200_000))

    result = cpu_timed(work, got.append)()
    assert result == sum(i * i for i in range(200_000))
    assert len(got) == 1 and got[0] > 0
