"""schemathesis against the live app's OpenAPI document: generated requests (valid and invalid) for every
operation, with the credentials each needs. No 5xx, no status code or content type the document does not
declare, every response body matching its schema."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.app import create_app
from tests.api.conftest import ACME_DOCS, ACME_KEY, ADMIN_TOKEN, GLOBEX_DOCS, live_server, service_settings

MIN_CASES = 1000
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# examples per operation and generation mode; operations with small input spaces run fewer
EXAMPLES = {"POST /query": 300, "POST /query/stream": 200, "POST /admin/tenants/{tenant}/documents": 200}


@pytest.fixture
def live_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    settings_ = service_settings(tmp_path, monkeypatch, rate_limit_qps=100_000.0, rate_limit_burst=100_000)
    with live_server(create_app(settings_), {"acme": ACME_DOCS, "globex": GLOBEX_DOCS}) as base:
        yield base


def credentials(path: str) -> dict[str, str]:
    admin = path.startswith("/admin") or path.startswith("/jobs")
    return {"Authorization": f"Bearer {ADMIN_TOKEN if admin else ACME_KEY}"}


def test_generated_requests_never_get_a_server_error_or_an_undocumented_response(live_url: str) -> None:
    schema = schemathesis.openapi.from_url(f"{live_url}/openapi.json")
    ran: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= set(EXAMPLES) | {"GET /jobs/{job_id}"}

    def fuzz(operation: schemathesis.APIOperation, label: str, mode: schemathesis.GenerationMode) -> None:
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES.get(label, 60),
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def run(case: schemathesis.Case) -> None:
            headers = {**(case.headers or {}), **credentials(operation.path)}  # real keys win
            response = case.call_and_validate(base_url=live_url, headers=headers, checks=CHECKS, timeout=30)
            ran[label] += 1
            statuses[response.status_code] += 1

        try:
            run()
        except Unsatisfiable:  # no invalid input exists for an operation without parameters
            assert mode is schemathesis.GenerationMode.NEGATIVE, label

    for operation in operations:
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            fuzz(operation, f"{operation.method.upper()} {operation.path}", mode)
    total = sum(ran.values())
    assert total >= MIN_CASES, f"only {total} cases ran: {dict(ran)}"
    assert not any(code >= 500 for code in statuses), dict(statuses)
    assert statuses[200] > 300 and statuses[422] > 100, dict(statuses)
    print(
        f"schemathesis: {total} cases; by operation {dict(ran)}; by status {dict(sorted(statuses.items()))}"
    )
