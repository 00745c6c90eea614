"""The reranker's domain record and the serving check: a collection is reranked only by a model whose
record names it (or its corpus) and says rerank helped on its held-out queries, unless overridden."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.rerank.cross_encoder import RerankerDefaults
from rag.rerank.domain import RERANKER_CONFIG, RerankerDomain, admit, corpus_fingerprint

TABLE = {"first_stage_only": 0.70, "blend_0.0": 0.74, "blend_1.0": 0.72}


def domain(**changes: object) -> RerankerDomain:
    record = {
        "collection": "zoo",
        "index_version": "v000002",
        "corpus_fingerprint": corpus_fingerprint(["cat", "dog"]),
        "rerank": True,
        "validation_queries": 80,
        "validation_ndcg@10": TABLE,
    } | changes
    found = RerankerDomain.of(record)
    assert found is not None
    return found


def never() -> str:
    raise AssertionError("the fingerprint is computed only when the collection names differ")


def test_the_fingerprint_is_the_set_of_document_ids() -> None:
    assert corpus_fingerprint(["b", "a"]) == corpus_fingerprint(["a", "b"])
    assert corpus_fingerprint(["a", "b"]) != corpus_fingerprint(["a", "b", "c"])


def test_a_validated_collection_is_reranked() -> None:
    got = admit(domain(), collection="zoo", fingerprint=never, allow_unvalidated=False)
    assert got.admitted and not got.overridden
    assert "first stage 0.7000, best rerank blend 0.7400" in got.reason


def test_the_same_corpus_under_another_name_counts_as_validated() -> None:
    got = admit(
        domain(),
        collection="zoo-onnx",
        fingerprint=lambda: corpus_fingerprint(["dog", "cat"]),
        allow_unvalidated=False,
    )
    assert got.admitted


@pytest.mark.parametrize(
    ("record", "collection", "why"),
    [
        (None, "zoo", "no domain record"),
        (domain(), "kitchen", "trained and validated on 'zoo', not on 'kitchen'"),
        (domain(rerank=False), "zoo", "rerank did not help on 'zoo'"),
    ],
)
def test_unvalidated_is_refused_unless_overridden(
    record: RerankerDomain | None, collection: str, why: str
) -> None:
    refused = admit(record, collection=collection, fingerprint=lambda: "other", allow_unvalidated=False)
    assert not refused.admitted and why in refused.reason
    overridden = admit(record, collection=collection, fingerprint=lambda: "other", allow_unvalidated=True)
    assert overridden.admitted and overridden.overridden and why in overridden.reason


def test_a_record_without_a_collection_is_no_domain_record(tmp_path: Path) -> None:
    (tmp_path / RERANKER_CONFIG).write_text(json.dumps({"first_stage_weight": 0.5}))  # an older record
    assert RerankerDomain.read(tmp_path) is None
    assert RerankerDomain.read(tmp_path / "missing") is None


def test_a_model_that_should_not_rerank_keeps_its_best_blend_for_an_override(tmp_path: Path) -> None:
    record = {"collection": "zoo", "rerank": False, "first_stage_weight": None, "best_blend_weight": 1.5}
    (tmp_path / RERANKER_CONFIG).write_text(json.dumps(record))
    assert RerankerDefaults.of(str(tmp_path)).first_stage_weight == 1.5
