"""Ingest jobs whose publish succeeded but whose switch to the new version failed say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.app import create_app
from tests.api.conftest import ACME_DOCS, ADMIN, serve, service_settings

pytestmark = pytest.mark.anyio


async def test_a_job_whose_publish_succeeded_but_reload_failed_reports_the_published_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(service_settings(tmp_path, monkeypatch))
    async with serve(app) as client:
        first = await client.post("/admin/tenants/acme/documents", json={"upsert": ACME_DOCS}, headers=ADMIN)
        assert first.json()["job"]["state"] == "succeeded"
        service = app.state.service
        assert service.lifecycle.runtime is not None

        def broken_reload() -> None:
            raise OSError("chunks.jsonl: input/output error")

        monkeypatch.setattr(service.lifecycle.runtime, "reload", broken_reload)
        edited = [{**ACME_DOCS[0], "text": "Cats sleep most of the day."}]
        r = await client.post("/admin/tenants/acme/documents", json={"upsert": edited}, headers=ADMIN)
        job = r.json()["job"]
        assert job["state"] == "reload_failed"
        assert job["index_version"] == "v000002" and job["report"]["version"] == "v000002"
        assert job["error"] == (
            "published version v000002; reload failed: OSError: chunks.jsonl: input/output error"
        )
        followed = (await client.get(f"/jobs/{job['id']}", headers=ADMIN)).json()
        assert followed["state"] == "reload_failed"
        # this replica keeps answering from the version it had
        assert (await client.get("/admin/index", headers=ADMIN)).json()["index_version"] == "v000001"
