"""rag.ops.stats: quantiles from hand-computed cumulative buckets, windows of two scrapes, the judged
summary, and `rag stats URL` against a live server."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from rag.ops.stats import (
    Level,
    Line,
    Scrape,
    Thresholds,
    alert_thresholds,
    collect,
    histogram_quantile,
    metrics_url,
    parse_scrape,
    render,
    summarize,
    window,
)
from tests.api.conftest import ACME, ACME_DOCS, live_server, service_settings

INF = math.inf
# 40 observations: 10 up to 0.1 s, 20 in (0.1, 0.5], 10 in (0.5, 1.0]
BUCKETS = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (INF, 40.0)]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.1, 0.04),  # rank 4 of the first bucket's 10, interpolated from 0: 0.1 x 4/10
        (0.25, 0.1),  # rank 10: the top of the first bucket
        (0.5, 0.3),  # rank 20: 10 into the second bucket's 20 → 0.1 + 0.4 x 10/20
        (0.95, 0.9),  # rank 38: 8 into the third bucket's 10 → 0.5 + 0.5 x 8/10
        (1.0, 1.0),
    ],
)
def test_quantile_interpolates_inside_the_bucket_the_rank_falls_in(q: float, expected: float) -> None:
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)
    assert histogram_quantile(q, reversed(BUCKETS)) == pytest.approx(expected)  # order does not matter


def test_quantile_edge_cases() -> None:
    # a rank in the +Inf bucket answers the highest finite bound (Prometheus does the same)
    assert histogram_quantile(0.9, [(0.1, 5.0), (INF, 10.0)]) == 0.1
    assert histogram_quantile(0.5, [(0.1, 0.0), (INF, 0.0)]) is None  # no observations
    assert histogram_quantile(0.5, [(0.1, 3.0)]) is None  # no +Inf bucket
    assert histogram_quantile(0.5, []) is None
    # counts that go down (a window over a restart) are made monotonic: [(0.1, 5), (0.5, 5), (+Inf, 6)]
    assert histogram_quantile(0.5, [(0.1, 5.0), (0.5, 3.0), (INF, 6.0)]) == pytest.approx(0.06)
    # empty leading buckets are skipped: rank 2 of 4 lies in (0.2, 0.4] → 0.2 + 0.2 x 2/4
    assert histogram_quantile(0.5, [(0.1, 0.0), (0.2, 0.0), (0.4, 4.0), (INF, 4.0)]) == pytest.approx(0.3)
    with pytest.raises(ValueError, match=r"quantile must be in \[0, 1\], got 1.5"):
        histogram_quantile(1.5, BUCKETS)


def test_quantile_matches_a_naive_sort_when_observations_sit_on_bucket_bounds() -> None:
    bounds = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5]
    observations = [b for i, b in enumerate(bounds) for _ in range(i + 1)]  # 1 x 0.001, 2 x 0.005, …
    cumulative = [(b, float(sum(1 for o in observations if o <= b))) for b in bounds] + [
        (INF, float(len(observations)))
    ]
    for q in (0.05, 0.5, 0.9, 1.0):
        naive = sorted(observations)[math.ceil(q * len(observations)) - 1]
        estimate = histogram_quantile(q, cumulative)
        assert estimate is not None
        lower = max([0.0] + [b for b in bounds if b < naive])
        assert lower < estimate <= naive + 1e-12  # inside the bucket that holds the true quantile


def exposition(
    *,
    ok: float,
    degraded: float = 0,
    error: float = 0,
    l1_hit: float = 0,
    l1_miss: float = 0,
    l2_hit: float = 0,
    l2_miss: float = 0,
    money: float = 0,
    cpu: float = 0,
    query_buckets: tuple[float, ...] = (10, 30, 40, 40),
    inflight: float = 0,
    open_breaker: str | None = None,
) -> str:
    """A /metrics body shaped like the service's (rag/metrics.py), with the given counts."""
    les = ("0.1", "0.5", "1.0", "+Inf")
    lines = [
        "# TYPE rag_queries_total counter",
        f'rag_queries_total{{tenant="acme",route="hybrid",status="ok",cache="miss"}} {ok}',
        f'rag_queries_total{{tenant="acme",route="hybrid",status="degraded",cache="miss"}} {degraded}',
        f'rag_queries_total{{tenant="acme",route="hybrid",status="error",cache="none"}} {error}',
        "# TYPE rag_query_duration_seconds histogram",
        *(
            f'rag_query_duration_seconds_bucket{{route="hybrid",le="{le}"}} {n}'
            for le, n in zip(les, query_buckets, strict=True)
        ),
        f'rag_query_duration_seconds_count{{route="hybrid"}} {query_buckets[-1]}',
        'rag_query_duration_seconds_sum{route="hybrid"} 1.0',
        "# TYPE rag_step_duration_seconds histogram",
        *(
            f'rag_step_duration_seconds_bucket{{step="embed",le="{le}"}} {n}'
            for le, n in zip(les, (8, 8, 8, 8), strict=True)
        ),
        'rag_step_duration_seconds_count{step="embed"} 8',
        'rag_step_duration_seconds_sum{step="embed"} 0.2',
        "# TYPE rag_cache_lookups_total counter",
        f'rag_cache_lookups_total{{level="l1",result="hit"}} {l1_hit}',
        f'rag_cache_lookups_total{{level="l1",result="miss"}} {l1_miss}',
        f'rag_cache_lookups_total{{level="l2",result="hit"}} {l2_hit}',
        f'rag_cache_lookups_total{{level="l2",result="miss"}} {l2_miss}',
        'rag_cache_lookups_created{level="l1",result="hit"} 1.7e+09',
        "# TYPE rag_cost_total counter",
        f'rag_cost_total{{step="embed",tenant="acme"}} {money}',
        "# TYPE rag_cost_cpu_seconds_total counter",
        f'rag_cost_cpu_seconds_total{{step="embed",tenant="acme"}} {cpu}',
        "# TYPE rag_inflight_queries gauge",
        f"rag_inflight_queries {inflight}",
        "# TYPE rag_breaker_state gauge",
        "# TYPE rag_degradations_total counter",
        f'rag_degradations_total{{step="rerank",reason="timeout"}} {degraded}',
    ]
    for breaker in ("embedder", "qdrant"):
        state = "open" if breaker == open_breaker else "closed"
        for s in ("closed", "open", "half-open"):
            lines.append(f'rag_breaker_state{{breaker="{breaker}",state="{s}"}} {1 if s == state else 0}')
    return "\n".join(lines) + "\n"


def by_name(lines: tuple[Line, ...], section: str, name: str) -> Line:
    return next(x for x in lines if x.section == section and x.name == name)


def test_parse_drops_created_samples_and_keeps_types() -> None:
    scrape = parse_scrape(exposition(ok=5, l1_hit=3), taken_at=100.0)
    assert scrape.total("rag_queries_total") == 5
    assert scrape.total("rag_queries_total", status="ok") == 5
    assert not scrape.has("rag_cache_lookups_created")
    assert scrape.types["rag_query_duration_seconds_bucket"] == "histogram"
    assert scrape.types["rag_inflight_queries"] == "gauge"


def test_window_subtracts_counters_keeps_gauges_and_survives_a_reset() -> None:
    before = parse_scrape(exposition(ok=100, l1_hit=50, money=1.0, inflight=3), taken_at=0.0)
    after = parse_scrape(exposition(ok=160, l1_hit=80, money=1.5, inflight=7), taken_at=60.0)
    w = window(after, before)
    assert w.total("rag_queries_total", status="ok") == 60
    assert w.total("rag_cache_lookups_total", level="l1", result="hit") == 30
    assert w.total("rag_cost_total") == pytest.approx(0.5)
    assert w.total("rag_inflight_queries") == 7  # a gauge: the later value
    # the server restarted between the scrapes: everything counted since is the increase
    restarted = parse_scrape(exposition(ok=12, money=0.1), taken_at=60.0)
    assert window(restarted, before).total("rag_queries_total", status="ok") == 12


def test_summary_of_a_healthy_service() -> None:
    scrape = parse_scrape(
        exposition(ok=99, degraded=1, l1_hit=40, l1_miss=60, l2_hit=10, l2_miss=50, money=0.01, cpu=2.0)
    )
    report = summarize(scrape, "http://x", thresholds=Thresholds())
    latency = by_name(report.lines, "latency", "query p50/p95/p99")
    assert latency.values["p50_s"] == pytest.approx(0.3) and latency.values["p99_s"] == pytest.approx(0.98)
    assert latency.level is Level.HEALTHY
    assert by_name(report.lines, "step", "embed").values["p99_s"] == pytest.approx(0.099)  # 8 of 8 ≤ 0.1 s
    success = by_name(report.lines, "queries", "success rate")
    assert success.values["success_rate"] == pytest.approx(1.0) and success.level is Level.HEALTHY
    assert by_name(report.lines, "cache", "l1 hit rate").values["hit_rate"] == pytest.approx(0.4)
    assert by_name(report.lines, "cache", "l2 hit rate").values["hit_rate"] == pytest.approx(10 / 60)
    overall_hits = by_name(report.lines, "cache", "hit rate (any level)")
    assert overall_hits.values["hit_rate"] == pytest.approx(0.5)  # (40 + 10) of 100 queries
    assert by_name(report.lines, "cost", "answer CPU per query").values["cpu_s_per_query"] == pytest.approx(
        0.02
    )
    cost = by_name(report.lines, "cost", "money (total)")  # no process start time: no rate to judge
    assert cost.level is Level.NO_DATA and cost.values["total"] == pytest.approx(0.01)
    assert by_name(report.lines, "degraded", "rerank: timeout").values["count"] == 1
    assert report.overall is Level.HEALTHY


@pytest.mark.parametrize(("error", "level"), [(0, Level.HEALTHY), (5, Level.WARNING), (10, Level.CRITICAL)])
def test_error_rate_thresholds(error: float, level: Level) -> None:
    # warning above 3 % (6 x the 0.5 % error budget), critical above 7.2 % (14.4 x)
    scrape = parse_scrape(exposition(ok=100 - error, error=error))
    line = by_name(summarize(scrape, "u", thresholds=Thresholds()).lines, "queries", "success rate")
    assert line.level is level


def test_cancelled_queries_count_neither_way() -> None:
    text = exposition(ok=90, error=10) + (
        'rag_queries_total{tenant="acme",route="hybrid",status="cancelled",cache="none"} 100\n'
    )
    line = by_name(
        summarize(parse_scrape(text), "u", thresholds=Thresholds()).lines, "queries", "success rate"
    )
    assert line.values == {"success_rate": 0.9, "error_rate": 0.1, "queries": 100}


def test_the_thresholds_are_the_alerts() -> None:
    """The defaults serve where monitoring/ is not importable: they must not drift from its config."""
    if importlib.util.find_spec("monitoring") is None:
        pytest.skip("no monitoring package here")
    assert alert_thresholds() == Thresholds()


def test_a_window_judges_rates_and_every_warning_shows() -> None:
    before = parse_scrape(
        exposition(ok=100, l1_hit=50, l1_miss=50, money=1.0, query_buckets=(0, 0, 0, 0)), taken_at=1000.0
    )
    after = parse_scrape(
        exposition(
            ok=200,
            l1_hit=55,
            l1_miss=145,  # 5 of the window's 100 lookups hit: 5 % < 10 %
            money=2.0,  # 1.0 in 600 s = 6.0 per hour > 5.0
            query_buckets=(10, 10, 10, 40),  # 30 of 40 above 1 s: p99 = the highest bound, 1.0 s
            inflight=100,  # > 32
            open_breaker="qdrant",
        ),
        taken_at=1600.0,
    )
    report = collect(
        "http://svc:8000",
        interval_s=600,
        scrape=_scrapes(before, after),
        sleep=lambda s: None,
    )
    assert report.window_s == pytest.approx(600)
    assert by_name(report.lines, "queries", "throughput").values["qps"] == pytest.approx(100 / 600)
    assert by_name(report.lines, "cost", "money per hour").values["per_hour"] == pytest.approx(6.0)
    assert by_name(report.lines, "cost", "money per hour").level is Level.WARNING
    assert by_name(report.lines, "cache", "hit rate (any level)").level is Level.WARNING
    assert by_name(report.lines, "load", "in flight").level is Level.WARNING
    assert by_name(report.lines, "breaker", "qdrant").level is Level.WARNING
    assert by_name(report.lines, "breaker", "embedder").level is Level.HEALTHY
    assert by_name(report.lines, "latency", "query p50/p95/p99").level is Level.HEALTHY  # 1.0 s ≤ 1.5 s
    tight = summarize(window(after, before), "u", window_s=600, thresholds=Thresholds(latency_p99_s=0.5))
    assert by_name(tight.lines, "latency", "query p50/p95/p99").level is Level.WARNING
    assert report.overall is Level.WARNING

    text = render(report)
    assert text.splitlines()[0] == "rag stats http://svc:8000 (window 600 s): WARNING"
    table = text.splitlines()[2:]
    status_at = table[0].index("status")
    assert all(row[status_at:].split()[0] in {"status", *Level} for row in table)  # one aligned column
    assert json.loads(json.dumps(report.as_dict()))["overall"] == "warning"


def test_a_quiet_window_is_not_judged() -> None:
    before = parse_scrape(exposition(ok=0, l1_miss=0, query_buckets=(0, 0, 0, 0)), taken_at=0.0)
    after = parse_scrape(exposition(ok=2, l1_miss=2, query_buckets=(0, 0, 0, 2)), taken_at=3600.0)
    report = summarize(window(after, before), "u", window_s=3600, thresholds=Thresholds())
    latency = by_name(report.lines, "latency", "query p50/p95/p99")
    assert latency.values["p99_s"] == 1.0  # would be judged against 0.5 s, but 2 queries an hour is noise
    quiet = summarize(window(after, before), "u", window_s=3600, thresholds=Thresholds(latency_p99_s=0.5))
    assert by_name(quiet.lines, "latency", "query p50/p95/p99").level is Level.INFO
    assert by_name(quiet.lines, "cache", "hit rate (any level)").level is Level.INFO  # 0 of 2 lookups


def test_each_route_gets_a_line_when_there_are_several() -> None:
    bm25 = "".join(
        f'rag_query_duration_seconds_bucket{{route="bm25",le="{le}"}} {n}\n'
        for le, n in (("0.1", 2), ("0.5", 2), ("1.0", 2), ("+Inf", 2))
    )
    text = exposition(ok=42).replace(
        "rag_query_duration_seconds_count", bm25 + "rag_query_duration_seconds_count", 1
    )
    lines = summarize(parse_scrape(text), "u", thresholds=Thresholds()).lines
    assert by_name(lines, "latency", "route bm25").values["count"] == 0  # no _count sample given for it
    assert by_name(lines, "latency", "route bm25").values["p99_s"] == pytest.approx(0.099)
    assert by_name(lines, "latency", "route hybrid").values["p50_s"] == pytest.approx(0.3)
    every = by_name(lines, "latency", "query p50/p95/p99").values
    # both routes summed: 12 ≤ 0.1 s, 32 ≤ 0.5 s, 42 in all; rank 21 → 0.1 + 0.4 x (21 - 12) / (32 - 12)
    assert every["p50_s"] == pytest.approx(0.28)


def _scrapes(*scrapes: Scrape) -> Callable[[str], Scrape]:
    queue = list(scrapes)
    return lambda url: queue.pop(0)


def test_arguments_are_checked() -> None:
    assert metrics_url("http://h:8000/") == "http://h:8000/metrics"
    assert metrics_url("http://h:8000/metrics") == "http://h:8000/metrics"
    with pytest.raises(ValueError, match="interval must be greater than 0 s, got 0"):
        collect("u", interval_s=0, scrape=_scrapes(), sleep=lambda s: None)
    with pytest.raises(ValueError, match="warning <= critical"):
        Thresholds(error_rate_warning=0.1, error_rate_critical=0.05)


@pytest.mark.integration
def test_rag_stats_against_a_live_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    with live_server(app, {"acme": ACME_DOCS}) as url:
        for text in ("who hunts mice", "who hunts mice", "what do bees make"):
            assert (
                httpx.post(f"{url}/query", json={"query": text}, headers=ACME, timeout=30).status_code == 200
            )
        done = subprocess.run(
            [sys.executable, "-m", "rag", "stats", url], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        assert "retrieve.bm25" in done.stdout and "query p50/p95/p99" in done.stdout
        assert "healthy" in done.stdout and "l1 hit rate" in done.stdout
        as_json = subprocess.run(
            [sys.executable, "-m", "rag", "stats", url, "--json", "--interval", "0.2"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert as_json.returncode == 0, as_json.stderr
        assert json.loads(as_json.stdout)["window_s"] > 0
        unreachable = subprocess.run(
            [sys.executable, "-m", "rag", "stats", "http://127.0.0.1:9"], capture_output=True, text=True
        )
        assert unreachable.returncode == 2 and "could not scrape" in unreachable.stderr
