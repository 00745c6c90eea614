"""``rag serve``'s app freezes the loaded models out of the cyclic GC's reach (rag.service.heap): a full
collection then walks what requests create, not the models; the index stays collectable."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.app import create_app
from rag.dense.hashing import HashEmbedder
from tests.api.conftest import ACME, ACME_DOCS, ingest, serve, service_settings

pytestmark = pytest.mark.anyio


@pytest.fixture
def unfrozen_after() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the rest of the suite's garbage stays collectable


def _tracked_ids() -> set[int]:
    return {id(o) for o in gc.get_objects()}


@pytest.mark.parametrize("freeze", [False, True])
async def test_a_served_app_freezes_its_models_not_its_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unfrozen_after: None, freeze: bool
) -> None:
    embedder = HashEmbedder(64)
    app = create_app(service_settings(tmp_path, monkeypatch), embedder=embedder, freeze_models=freeze)
    async with serve(app) as client:
        await ingest(client, "acme", ACME_DOCS)
        lifecycle = app.state.service.lifecycle
        runtime = lifecycle.runtime
        tracked = _tracked_ids()
        # a frozen object is still tracked but is in no generation: a full collection does not walk it
        assert gc.is_tracked(embedder)
        assert (id(embedder) in tracked) is not freeze
        assert (gc.get_freeze_count() > 0) is freeze
        # the index (published after the models loaded) stays in the collector's reach either way
        assert id(runtime) in tracked
        r = await client.post("/query", json={"query": "which animal hunts mice"}, headers=ACME)
        assert r.status_code == 200, r.text
