"""Models know their domain, end to end: a reranker trained (a few steps, from the real MiniLM weights) on
one collection is refused on another — the first-stage order stands and the answer says
``rerank/unvalidated`` — unless the operator overrides; on its own collection it reranks when its held-out
validation said it helps."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.config import Settings
from rag.offline.evaluation import evaluate
from rag.offline.reranker_training import TrainConfig, train_reranker
from rag.rerank.domain import RERANKER_CONFIG, corpus_fingerprint
from rag.retrieval.plan import PipelineName, plan_for
from rag.runtime import Runtime
from rag.types import DegradationCode, Document
from tests.conftest import ANIMALS, write_beir

ZOO = [
    *ANIMALS,
    Document("frog", "Frogs are amphibians that croak in ponds and catch flies with their tongue.", "Frog"),
    Document("eagle", "Eagles are large birds of prey with sharp eyes that hunt fish and rabbits.", "Eagle"),
    Document("ant", "Ants are social insects that live in colonies and carry leaves.", "Ant"),
    Document("shark", "Sharks are fish with cartilage skeletons that hunt in the ocean.", "Shark"),
]
ZOO_QUERIES = {
    "z1": "which animals hunt mice",
    "z2": "insects making honey",
    "z3": "fish swimming up rivers",
    "z4": "birds that hunt fish",
    "z5": "animals living in ponds",
    "z6": "insects living in colonies",
    "z7": "mammals of the sea that sing",
    "z8": "predators of the ocean",
    "z9": "loyal pets that bark",
    "z10": "birds that fly silently at night",
}
ZOO_QRELS = {
    "z1": {"cat": 1, "owl": 1},
    "z2": {"bee": 1},
    "z3": {"salmon": 1},
    "z4": {"eagle": 1},
    "z5": {"frog": 1},
    "z6": {"ant": 1},
    "z7": {"whale": 1},
    "z8": {"shark": 1},
    "z9": {"dog": 1},
    "z10": {"owl": 1},
}
KITCHEN = [
    Document("bread", "Bread is baked from flour, water and yeast; the dough rises before baking.", "Bread"),
    Document("soup", "Soup is simmered from vegetables and stock in a large pot.", "Soup"),
    Document("pasta", "Pasta is boiled in salted water until al dente, then sauced.", "Pasta"),
    Document("salad", "A salad mixes raw leaves and vegetables with oil and vinegar.", "Salad"),
    Document("cake", "Cake is baked from flour, sugar, eggs and butter, then iced.", "Cake"),
    Document("stew", "A stew cooks meat and vegetables slowly in a covered pot.", "Stew"),
]
KITCHEN_QUERIES = {"k1": "baking with flour", "k2": "cooking in a pot", "k3": "boiling in water"}
KITCHEN_QRELS = {"k1": {"bread": 1, "cake": 1}, "k2": {"soup": 1, "stew": 1}, "k3": {"pasta": 1}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object], Path]:
    """A reranker trained on the ``zoo`` collection (a handful of steps), and the data dir it lives in."""
    import os

    root = tmp_path_factory.mktemp("domain")
    saved = {k: os.environ.pop(k) for k in [k for k in os.environ if k.startswith("RAG_")]}
    try:
        settings = Settings(data_dir=root / "data", embedder_model="hash:64", collection="zoo")
        zoo = write_beir(root / "zoo", ZOO, ZOO_QUERIES, ZOO_QRELS)
        (zoo / "qrels" / "train.tsv").write_text((zoo / "qrels" / "test.tsv").read_text())
        report = train_reranker(
            settings,
            zoo,
            root / "rr-zoo",
            config=TrainConfig(
                negatives=2, in_batch_negatives=1, mine_depth=5, epochs=1, batch_size=4, max_length=64
            ),
        )
    finally:
        os.environ.update(saved)
    return root / "rr-zoo", report, root / "data"


def serving(settings: Settings, data_dir: Path, model: Path, collection: str, **changes: object) -> Settings:
    return settings.model_copy(
        update={"data_dir": data_dir, "collection": collection, "reranker_model": str(model), **changes}
    )


def rewrite_record(model: Path, **changes: object) -> None:
    path = model / RERANKER_CONFIG
    path.write_text(json.dumps(json.loads(path.read_text()) | changes))


@pytest.mark.slow
def test_training_records_the_collection_and_its_validation(
    trained: tuple[Path, dict[str, object], Path],
) -> None:
    model, report, _ = trained
    record = json.loads((model / RERANKER_CONFIG).read_text())
    assert record["collection"] == "zoo" and record["index_version"] == "v000001"
    assert record["corpus_fingerprint"] == corpus_fingerprint(d.doc_id for d in ZOO)
    assert record["validation_queries"] == 2
    table = record["validation_ndcg@10"]
    assert set(table) == {"first_stage_only", *(f"blend_{w}" for w in (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0))}
    assert record["rerank"] is (record["first_stage_weight"] is not None)
    assert report["collection"] == "zoo"


@pytest.mark.slow
def test_another_collection_is_not_reranked_unless_overridden(
    settings: Settings, trained: tuple[Path, dict[str, object], Path], tmp_path: Path
) -> None:
    model, _, data_dir = trained
    rewrite_record(model, rerank=True, first_stage_weight=0.0)  # even a model that helped on its own corpus
    kitchen = write_beir(tmp_path / "kitchen", KITCHEN, KITCHEN_QUERIES, KITCHEN_QRELS)
    served = serving(settings, data_dir, model, "kitchen")

    refused = evaluate(served, kitchen, PipelineName.HYBRID_RERANK, progress=False)
    hybrid = evaluate(served, kitchen, PipelineName.HYBRID, progress=False)
    assert refused["rerank_pairs"] == 0
    [(why, count)] = refused["degraded"].items()
    assert count == 3 and why == "rerank: trained and validated on 'zoo', not on 'kitchen'"
    assert refused["ndcg@10"] == hybrid["ndcg@10"]  # never below plain hybrid: it is plain hybrid

    runtime = Runtime.open(served)
    try:
        assert runtime.reranker is None and runtime.rerank_configured
        plan = plan_for(PipelineName.HYBRID_RERANK, served, top_k=6, reranker_available=True)
        outcome = runtime.pipeline.search("baking with flour", plan)
        base = runtime.pipeline.search("baking with flour", plan.with_(rerank_depth=0))
    finally:
        runtime.close()
    assert [d.as_dict()["step"] + "/" + d.code for d in outcome.degraded] == ["rerank/unvalidated"]
    assert [h.doc_id for h in outcome.hits] == [h.doc_id for h in base.hits]

    overridden = evaluate(
        serving(settings, data_dir, model, "kitchen", reranker_allow_unvalidated=True),
        kitchen,
        PipelineName.HYBRID_RERANK,
        progress=False,
    )
    assert overridden["rerank_pairs"] == 3 * 6 and overridden["degraded"] == {}


@pytest.mark.slow
def test_its_own_collection_is_reranked_only_where_validation_said_it_helps(
    settings: Settings, trained: tuple[Path, dict[str, object], Path]
) -> None:
    model, _, data_dir = trained
    served = serving(settings, data_dir, model, "zoo")
    plan = plan_for(PipelineName.HYBRID_RERANK, served, top_k=10, reranker_available=True)

    rewrite_record(model, rerank=False, first_stage_weight=None)
    runtime = Runtime.open(served)
    try:
        outcome = runtime.pipeline.search("which animals hunt mice", plan)
    finally:
        runtime.close()
    assert outcome.rerank_pairs == 0
    [why] = outcome.degraded
    assert why.code is DegradationCode.UNVALIDATED and "rerank did not help on 'zoo'" in why.reason

    rewrite_record(model, rerank=True, first_stage_weight=0.0)
    runtime = Runtime.open(served)
    try:
        assert runtime.reranker is not None and runtime.rerank_refusal is None
        outcome = runtime.pipeline.search("which animals hunt mice", plan)
    finally:
        runtime.close()
    assert outcome.rerank_pairs == len(ZOO) and not outcome.degraded
