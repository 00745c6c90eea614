"""The served index version decides which embedder answers queries (and so the cache namespace, which is
built from the pipeline's embedder): ``RAG_EMBEDDER_MODEL`` names the model the next ingest embeds with."""

from __future__ import annotations

import copy

import pytest

from rag.config import Settings
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime, configured_embedder_name, embedder_settings, settings_for_embedder
from tests.conftest import ANIMALS, make_ingestor


def test_the_served_version_names_the_query_embedder_not_the_setting(settings: Settings) -> None:
    ingestor, store = make_ingestor(settings)  # hash:64
    ingestor.ingest(ANIMALS)
    store.close()
    changed = settings.model_copy(update={"embedder_model": "hash:32"})
    assert embedder_settings(changed).embedder_model == "hash:64"
    runtime = Runtime.open(changed)
    try:
        assert runtime.embedder.name == runtime.pipeline.embedder.name == "hash:64"  # type: ignore[union-attr]
        outcome = runtime.pipeline.search(
            "who hunts mice", plan_for(PipelineName.DENSE, changed, top_k=3, reranker_available=False)
        )
        # a 32-d query against the version's 64-d vectors would have failed the dense step
        assert not outcome.degraded and outcome.hits[0].doc_id in {"cat", "owl"}

        # a version built with another model brings that model along; switching back costs nothing
        other = copy.copy(runtime.snapshot)
        other.manifest = {**runtime.snapshot.manifest, "embedder": "hash:48"}
        first = runtime.embedder_for(other)
        assert first.name == "hash:48" and runtime.embedder_for(other) is first
        assert runtime.embedder_for(runtime.snapshot) is runtime.embedder
    finally:
        runtime.close()


def test_an_unpublished_collection_uses_the_setting(settings: Settings) -> None:
    assert embedder_settings(settings) is settings


@pytest.mark.parametrize(
    ("model", "backend", "name", "expect_model", "expect_backend"),
    [
        ("hash:64:0.01", "auto", "hash:64", "hash:64:0.01", "auto"),  # the same model: the spec kept
        ("hash:64", "auto", "/models/tuned", "/models/tuned", "auto"),
        ("m", "onnx-int8", "m#onnx-int8", "m", "onnx-int8"),
        ("m", "onnx-int8", "/models/tuned", "/models/tuned", "auto"),  # int8 is its own model's name
        ("m", "torch", "/models/tuned#onnx-int8", "/models/tuned", "onnx-int8"),
    ],
)
def test_settings_for_a_manifest_embedder_name(
    settings: Settings, model: str, backend: str, name: str, expect_model: str, expect_backend: str
) -> None:
    base = settings.model_copy(update={"embedder_model": model, "embedder_backend": backend})
    got = settings_for_embedder(base, name)
    assert (got.embedder_model, got.embedder_backend) == (expect_model, expect_backend)
    assert configured_embedder_name(got) == name
