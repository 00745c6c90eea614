"""Locust load test for `rag serve`: a weighted mix of what tenants do.

    locust -f benchmarks/load/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8000

Task mix (weights): popular queries repeated, Zipf-weighted (45: the L1 cache path), paraphrases of the
popular queries (15: the L2 semantic path), novel queries (20: computed), the same over `/query/stream`
(10: the whole SSE body is read and must end with a `result` event), and feedback on computed answers
(5: `POST /feedback`, which only a computed, undegraded answer can take). Each /query request is named
after its kind (`/query [popular]` …) so locust's table splits them.

A request fails on a non-2xx status or a malformed body (not the QueryResponse shape; a stream without a
final `result`). A 429 fails with its own message, "rate limited (429)", so it is counted apart from errors.

Environment:
  LOAD_API_KEY          tenant key sent as `Authorization: Bearer …` (default: the demo key)
  LOAD_TOP_K            top_k of each query (default 10)
  LOAD_QUERIES          BEIR folder whose queries.jsonl is used; default: a built-in demo-corpus list
  LOAD_POPULAR          how many of those queries are the popular ones (default 30)
  LOAD_WAIT_S           think time between tasks, "MIN,MAX" seconds or one number (default "0.2,1.0")
  LOAD_MAX_REQUESTS     stop after this many query requests (/query and /query/stream; default: no limit;
                        counted in this process, so single-process runs only)
  LOAD_MAX_FAIL_RATIO   exit code 1 when the failure ratio is above this (default 0.01)
  LOAD_MAX_P95_MS       exit code 1 when the p95 of all requests is above this, in ms (default 2000)
  LOAD_REPORT           write a JSON summary here at the end (cache outcomes per kind, 429s, verdict)

Locust FastHttpUser costs about 120 µs of CPU per request here (DESIGN.md; wrk ≈ 20 µs): on a 2-core box
it competes with the server it measures, so benchmarks report its CPU next to the server's.
"""

from __future__ import annotations

import json
import os
import random
import resource
import sys
from collections import Counter, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, between, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner
from locust.stats import StatsEntry

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.load.queries import QuerySet, load_queries  # noqa: E402

DEMO_KEY = "demo-key-0123456789abcdef"
CACHE_VALUES = frozenset({"off", "l1", "l2", "miss", "coalesced"})
ANSWER_KEYS = frozenset({"request_id", "results", "route", "plan", "degraded", "cache", "timings_ms", "cost"})
QUERY_ROUTES = ("/query", "/query/stream")


def _number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r}: expected a number") from None
    if value < 0:
        raise ValueError(f"{name}={raw!r}: must be >= 0")
    return value


@dataclass(frozen=True, slots=True)
class Config:
    api_key: str
    top_k: int
    queries: str | None
    popular: int
    wait_s: tuple[float, float]
    max_requests: int
    max_fail_ratio: float
    max_p95_ms: float
    report: str | None

    @classmethod
    def from_env(cls) -> Config:
        wait = [float(x) for x in os.environ.get("LOAD_WAIT_S", "0.2,1.0").split(",") if x.strip()]
        if len(wait) not in (1, 2) or min(wait) < 0 or wait[0] > wait[-1]:
            raise ValueError(f"LOAD_WAIT_S={os.environ['LOAD_WAIT_S']!r}: expected 'MIN,MAX' or one number")
        return cls(
            api_key=os.environ.get("LOAD_API_KEY", DEMO_KEY),
            top_k=int(_number("LOAD_TOP_K", 10)),
            queries=os.environ.get("LOAD_QUERIES") or None,
            popular=int(_number("LOAD_POPULAR", 30)),
            wait_s=(wait[0], wait[-1]),
            max_requests=int(_number("LOAD_MAX_REQUESTS", 0)),
            max_fail_ratio=_number("LOAD_MAX_FAIL_RATIO", 0.01),
            max_p95_ms=_number("LOAD_MAX_P95_MS", 2000.0),
            report=os.environ.get("LOAD_REPORT") or None,
        )


CONFIG = Config.from_env()
QUERIES: QuerySet = load_queries(CONFIG.queries, popular=CONFIG.popular)
POPULARITY = QUERIES.popularity()

# what the answers said, per kind of query: cache outcome counts, degraded answers, refusals
CACHE_BY_KIND: dict[str, Counter[str]] = {}
TALLY: Counter[str] = Counter()
CPU_AT_START = [0.0]  # this process's CPU seconds when the test started (not counting locust's start-up)


def answer_problem(body: Any) -> str | None:
    """Why ``body`` is not a QueryResponse, or None."""
    if not isinstance(body, dict):
        return "body is not a JSON object"
    missing = ANSWER_KEYS - body.keys()
    if missing:
        return f"body lacks {sorted(missing)}"
    if not isinstance(body["results"], list) or not isinstance(body["degraded"], list):
        return "results/degraded are not lists"
    if body["cache"] not in CACHE_VALUES:
        return f"unknown cache value {body['cache']!r}"
    for r in body["results"]:
        if not isinstance(r, dict) or "doc_id" not in r or "score" not in r:
            return "a result lacks doc_id/score"
    return None


def parse_sse(text: str) -> list[tuple[str, str]]:
    """(event, data) pairs of a Server-Sent Events body."""
    events_: list[tuple[str, str]] = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            name, _, value = line.partition(":")
            fields[name] = fields.get(name, "") + value.removeprefix(" ")
        if fields:
            events_.append((fields.get("event", "message"), fields.get("data", "")))
    return events_


def error_code(text: str) -> str:
    """The service's error code in an error body or event (``{"error": {"code": …}}`` or ``{"code": …}``),
    so that locust groups failures by cause rather than by message (messages carry timings)."""
    try:
        data = json.loads(text)
    except ValueError:
        return text[:80] or "(empty body)"
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]
    return str(data.get("code", text[:80])) if isinstance(data, dict) else text[:80]


def status_problem(status: int, text: str, error: object) -> str | None:
    if status == 429:
        return "rate limited (429)"
    if status == 0:
        return f"connection error: {error}"
    if not 200 <= status < 300:
        return f"HTTP {status} {error_code(text)}"
    return None


def _record(kind: str, body: dict[str, Any]) -> None:
    CACHE_BY_KIND.setdefault(kind, Counter())[body["cache"]] += 1
    if body["degraded"]:
        TALLY[f"degraded:{kind}"] += 1


class RagUser(FastHttpUser):
    """One tenant's user: asks, sometimes streams, sometimes rates an answer."""

    wait_time = (
        constant(CONFIG.wait_s[0]) if CONFIG.wait_s[0] == CONFIG.wait_s[1] else between(*CONFIG.wait_s)
    )
    network_timeout = 60.0
    connection_timeout = 10.0

    def on_start(self) -> None:
        self.auth = {"Authorization": f"Bearer {CONFIG.api_key}"}
        self.to_rate: deque[tuple[str, list[str]]] = deque(maxlen=16)

    def _popular_index(self) -> int:
        return random.choices(range(len(QUERIES.popular)), weights=POPULARITY)[0]

    @task(45)
    def popular(self) -> None:
        self._query(QUERIES.popular[self._popular_index()], "popular")

    @task(15)
    def paraphrase(self) -> None:
        self._query(random.choice(QUERIES.paraphrases[self._popular_index()]), "paraphrase")

    @task(20)
    def novel(self) -> None:
        self._query(random.choice(QUERIES.novel), "novel")

    @task(10)
    def stream(self) -> None:
        if random.random() < 0.5:
            self._stream(QUERIES.popular[self._popular_index()], "popular")
        else:
            self._stream(random.choice(QUERIES.novel), "novel")

    @task(5)
    def feedback(self) -> None:
        if not self.to_rate:
            return
        request_id, doc_ids = self.to_rate.popleft()
        body: dict[str, Any] = {"request_id": request_id}
        body |= {"clicked": doc_ids[:1]} if doc_ids else {"rating": random.randint(1, 5)}
        with self.client.post("/feedback", json=body, headers=self.auth, catch_response=True) as r:
            problem = status_problem(r.status_code, r.text or "", getattr(r, "error", None))
            if problem is None:
                try:
                    problem = None if "reward" in r.json() else "feedback body lacks reward"
                except ValueError:
                    problem = "feedback body is not JSON"
            if problem:
                r.failure(problem)
            else:
                r.success()

    def _body(self, text: str) -> dict[str, Any]:
        return {"query": text, "top_k": CONFIG.top_k}

    def _query(self, text: str, kind: str) -> None:
        with self.client.post(
            "/query", json=self._body(text), headers=self.auth, name=f"/query [{kind}]", catch_response=True
        ) as r:
            problem = status_problem(r.status_code, r.text or "", getattr(r, "error", None))
            body: Any = None
            if problem is None:
                try:
                    body = r.json()
                except ValueError:
                    problem = "body is not JSON"
                else:
                    problem = answer_problem(body)
            if problem:
                TALLY["rate_limited" if r.status_code == 429 else "failed"] += 1
                r.failure(problem)
                return
            r.success()
        _record(kind, body)
        if body["cache"] == "miss" and not body["degraded"]:  # the answers /feedback can rate
            self.to_rate.append((body["request_id"], [x["doc_id"] for x in body["results"]]))

    def _stream(self, text: str, kind: str) -> None:
        with self.client.post(
            "/query/stream",
            json=self._body(text),
            headers=self.auth | {"Accept": "text/event-stream"},
            name="/query/stream",
            catch_response=True,
        ) as r:
            problem = status_problem(r.status_code, r.text or "", getattr(r, "error", None))
            body: Any = None
            if problem is None:
                sse = parse_sse(r.text or "")
                if not sse:
                    problem = "empty event stream"
                elif sse[-1][0] == "error":
                    problem = f"stream ended with an error event: {error_code(sse[-1][1])}"
                elif sse[-1][0] != "result":
                    problem = f"stream ended with {sse[-1][0]!r}, not 'result'"
                else:
                    try:
                        body = json.loads(sse[-1][1])
                    except ValueError:
                        problem = "result event data is not JSON"
                    else:
                        problem = answer_problem(body)
            if problem:
                TALLY["rate_limited" if r.status_code == 429 else "failed"] += 1
                r.failure(problem)
                return
            r.success()
        _record(f"stream-{kind}", body)


# -- thresholds and the stop-after-N counter ----------------------------------------------------------


def verdict(
    requests: int, fail_ratio: float, p95_ms: float | None, config: Config, exceptions: int = 0
) -> list[str]:
    """Why the run fails its thresholds (empty: it passes)."""
    reasons = [f"{exceptions} exceptions raised in tasks (a bug in the locustfile?)"] if exceptions else []
    if requests == 0:
        return [*reasons, "no requests were made"]
    if fail_ratio > config.max_fail_ratio:
        reasons.append(f"failure ratio {fail_ratio:.2%} > LOAD_MAX_FAIL_RATIO {config.max_fail_ratio:.2%}")
    if p95_ms is not None and p95_ms > config.max_p95_ms:
        reasons.append(f"p95 {p95_ms:g} ms > LOAD_MAX_P95_MS {config.max_p95_ms:g} ms")
    return reasons


@events.init.add_listener
def _stop_after_max_requests(environment: Environment, **_: Any) -> None:
    if CONFIG.max_requests <= 0 or isinstance(environment.runner, WorkerRunner):
        return
    seen = {"queries": 0, "stopping": False}

    def count(name: str, **__: Any) -> None:
        if not name.startswith(QUERY_ROUTES) or seen["stopping"]:
            return
        seen["queries"] += 1
        if seen["queries"] >= CONFIG.max_requests and environment.runner is not None:
            seen["stopping"] = True
            print(f"LOAD_MAX_REQUESTS={CONFIG.max_requests} query requests made: stopping", flush=True)
            gevent.spawn(environment.runner.quit)  # not from this user's greenlet: quit() kills the users

    environment.events.request.add_listener(count)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@events.test_start.add_listener
def _mark_start(environment: Environment, **_: Any) -> None:
    CPU_AT_START[0] = _cpu_s()


def _entry(entry: StatsEntry) -> dict[str, Any]:
    """One row of locust's final stats (its percentiles: rounded response times)."""
    ms = entry.get_response_time_percentile
    return {
        "name": entry.name,
        "method": entry.method,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "req_per_s": entry.total_rps,
        "p50_ms": ms(0.5) if entry.num_requests else None,
        "p95_ms": ms(0.95) if entry.num_requests else None,
        "p99_ms": ms(0.99) if entry.num_requests else None,
        "max_ms": entry.max_response_time if entry.num_requests else None,
    }


@events.quitting.add_listener
def _apply_thresholds(environment: Environment, **_: Any) -> None:
    """Set locust's exit code from the thresholds (and write LOAD_REPORT)."""
    if isinstance(environment.runner, WorkerRunner):
        return
    total = environment.stats.total
    p95 = total.get_response_time_percentile(0.95) if total.num_requests else None
    exceptions = sum(e["count"] for e in environment.runner.exceptions.values()) if environment.runner else 0
    reasons = verdict(total.num_requests, total.fail_ratio, p95, CONFIG, exceptions)
    environment.process_exit_code = 1 if reasons else 0
    summary = {
        "requests": total.num_requests,
        "failures": total.num_failures,
        "fail_ratio": total.fail_ratio,
        "p95_ms": p95,
        "duration_s": max(total.last_request_timestamp - total.start_time, 0.0)
        if total.num_requests
        else 0.0,
        "locust_cpu_s": _cpu_s() - CPU_AT_START[0],  # this process, from test start to here
        "rate_limited": TALLY["rate_limited"],
        "cache_by_kind": {kind: dict(c) for kind, c in sorted(CACHE_BY_KIND.items())},
        "degraded_by_kind": {k.split(":", 1)[1]: v for k, v in TALLY.items() if k.startswith("degraded:")},
        "queries": QUERIES.source,
        "thresholds": {"max_fail_ratio": CONFIG.max_fail_ratio, "max_p95_ms": CONFIG.max_p95_ms},
        "passed": not reasons,
        "reasons": reasons,
        "errors": {
            f"{e.method} {e.name}: {e.error}": e.occurrences
            for e in sorted(environment.stats.errors.values(), key=lambda e: -e.occurrences)
        },
        "by_name": [_entry(e) for e in sorted(environment.stats.entries.values(), key=lambda e: e.name)]
        + [_entry(total)],
    }
    if CONFIG.report:
        Path(CONFIG.report).write_text(json.dumps(summary, indent=2) + "\n")
    if reasons:
        print("load test FAILED its thresholds: " + "; ".join(reasons), file=sys.stderr, flush=True)
    else:
        print(
            f"load test passed: failure ratio {total.fail_ratio:.2%} <= {CONFIG.max_fail_ratio:.2%}, "
            f"p95 {p95:g} ms <= {CONFIG.max_p95_ms:g} ms",
            file=sys.stderr,
            flush=True,
        )
