"""Bring your own vectors: given vectors are stored like computed ones (same rotation, same search), never
sent to the embedder, and refused with the field and limit when they do not fit the collection."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from rag.cli import main
from rag.config import Settings
from rag.dense.hashing import HashEmbedder
from rag.index.given_vectors import NORM_TOLERANCE, VectorError, attach_rows, chunk_count
from rag.index.ingest import Ingestor
from rag.index.versions import VersionStore
from rag.runtime import ingest_params, open_store
from rag.types import Document, GivenVectors, passage_text
from tests.conftest import ANIMALS


class CountingEmbedder:
    """The hash embedder, counting what is asked of it."""

    def __init__(self, dim: int = 64) -> None:
        self.inner = HashEmbedder(dim)
        self.texts: list[str] = []
        self.dim_asked = 0

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dim(self) -> int:
        self.dim_asked += 1
        return self.inner.dim

    def warm_up(self) -> None:
        pass

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        self.texts.extend(texts)
        return self.inner.embed(texts, batch_size=batch_size)


def with_vectors(docs: list[Document], field: str = "embedding") -> list[Document]:
    """``docs`` carrying the hash embedder's vectors of their passages (what the ingest would compute)."""
    embedder = HashEmbedder(64)
    out = []
    for d in docs:
        rows = embedder.embed([passage_text(d.title, d.text)])
        out.append(replace(d, vectors=GivenVectors(rows.tolist(), field)))  # type: ignore[arg-type]
    return out


def ingestor(settings: Settings, embedder: CountingEmbedder) -> Ingestor:
    return Ingestor(ingest_params(settings), embedder, open_store(settings), progress=False)


def dense_scores(settings: Settings, query: str) -> list[tuple[str, float]]:
    store = open_store(settings)
    try:
        embedder = HashEmbedder(64)
        rotation = np.load(settings.versions_dir / "rotation.npy")
        q = embedder.embed([query])[0] @ rotation
        return [(pid, round(score, 6)) for pid, score in store.search(q, limit=6)]
    finally:
        store.close()


def test_given_vectors_are_not_embedded_and_search_like_computed_ones(
    settings: Settings, tmp_path: Path
) -> None:
    computed = CountingEmbedder()
    ing = ingestor(settings, computed)
    ing.ingest(ANIMALS)
    ing.store.close()
    assert len(computed.texts) == len(ANIMALS)

    given_settings = settings.model_copy(update={"data_dir": tmp_path / "given"})
    given = CountingEmbedder()
    ing = ingestor(given_settings, given)
    report = ing.ingest(with_vectors(ANIMALS), embedding_model="hash:64")
    ing.store.close()
    assert given.texts == []  # the embedder computed nothing
    assert (report.chunks_embedded, report.chunks_given, report.docs_added) == (0, 6, 6)
    # the same rotation was fitted and applied: the stored vectors search identically
    np.testing.assert_array_equal(
        np.load(settings.versions_dir / "rotation.npy"), np.load(given_settings.versions_dir / "rotation.npy")
    )
    for query in ("honey pollinate flowers", "animals that hunt mice at night"):
        assert dense_scores(settings, query) == dense_scores(given_settings, query)
    manifest = json.loads((given_settings.versions_dir / "v000001" / "manifest.json").read_text())
    assert manifest["given_vectors"] == {"given": 6, "model": "hash:64"}
    assert manifest["embedder"] == "hash:64"


def test_only_the_chunks_without_vectors_are_embedded(settings: Settings) -> None:
    embedder = CountingEmbedder()
    ing = ingestor(settings, embedder)
    docs = with_vectors(ANIMALS[:4]) + ANIMALS[4:]
    report = ing.ingest(docs, embedding_model="hash:64")
    ing.store.close()
    assert embedder.texts == [passage_text(d.title, d.text) for d in ANIMALS[4:]]
    assert (report.chunks_embedded, report.chunks_given) == (2, 4)


def test_an_existing_collection_does_not_ask_the_embedder_at_all(settings: Settings) -> None:
    first = ingestor(settings, CountingEmbedder())
    first.ingest(ANIMALS[:2])
    first.store.close()
    embedder = CountingEmbedder()
    ing = ingestor(settings, embedder)
    report = ing.ingest(with_vectors(ANIMALS[2:]), embedding_model="hash:64")
    ing.store.close()
    assert (embedder.texts, embedder.dim_asked) == ([], 0)  # the model would not even be loaded
    assert (report.version, report.chunks_given) == ("v000002", 4)


def test_one_vector_per_chunk_of_a_long_document(settings: Settings) -> None:
    params = ingest_params(settings)
    text = " ".join(f"word{i}" for i in range(params.chunk_words * 2))
    n = chunk_count(text, size=params.chunk_words, overlap=params.chunk_overlap_words)
    assert n > 1
    rows = HashEmbedder(64).embed([f"part {i}" for i in range(n)])
    embedder = CountingEmbedder()
    ing = ingestor(settings, embedder)
    report = ing.ingest([Document("long", text, vectors=GivenVectors(rows))], embedding_model="hash:64")
    ing.store.close()
    assert (report.chunks_total, report.chunks_given, embedder.texts) == (n, n, [])


def _bad(vector: list[float], field: str = "embedding") -> list[Document]:
    return [replace(ANIMALS[0], vectors=GivenVectors([vector], field))]  # type: ignore[arg-type]


UNIT = [1.0] + [0.0] * 63


@pytest.mark.parametrize(
    ("docs", "model", "field", "limit", "says"),
    [
        (_bad([1.0] + [0.0] * 31), "hash:64", "upsert.0.embedding", 64, "32 dimensions"),
        (_bad([float("nan")] + [0.0] * 63), "hash:64", "upsert.0.embedding", None, "NaN"),
        (_bad([2.0] + [0.0] * 63), "hash:64", "upsert.0.embedding", NORM_TOLERANCE, "norm 2"),
        (_bad(UNIT), "other-model", "embedding_model", "hash:64", "not the collection's embedder"),
        (_bad(UNIT), None, "embedding_model", "hash:64", "name the model"),
        (
            [replace(ANIMALS[0], vectors=GivenVectors([UNIT, UNIT]))],
            "hash:64",
            "upsert.0.embeddings",
            1,
            r"makes 1 chunk\(s\)",
        ),
    ],
)
def test_vectors_that_do_not_fit_are_refused_and_write_nothing(
    settings: Settings, docs: list[Document], model: str | None, field: str, limit: object, says: str
) -> None:
    first = ingestor(settings, CountingEmbedder())
    first.ingest(ANIMALS[1:3])
    first.store.close()
    embedder = CountingEmbedder()
    ing = ingestor(settings, embedder)
    with pytest.raises(VectorError, match=says) as refused:
        ing.ingest([ANIMALS[3], *docs], embedding_model=model)
    ing.store.close()
    field = field.replace("upsert.0", "upsert.1")  # the position in the batch
    assert (refused.value.field, refused.value.limit) == (field, limit)
    assert VersionStore(settings.versions_dir).current() == "v000001"
    assert embedder.texts == []


def test_a_vector_near_unit_norm_is_normalised(settings: Settings) -> None:
    ing = ingestor(settings, CountingEmbedder())
    near = [1.0 + NORM_TOLERANCE / 2] + [0.0] * 63
    report = ing.ingest(_bad(near), embedding_model="hash:64")
    ing.store.close()
    assert report.chunks_given == 1


def test_sidecar_rows_follow_the_chunks_in_corpus_order(settings: Settings) -> None:
    matrix = np.arange(12, dtype=np.float32).reshape(6, 2)
    docs = list(attach_rows(ANIMALS, matrix, chunk_words=200, overlap_words=20))
    rows = [np.asarray(d.vectors.rows).tolist() for d in docs if d.vectors]
    assert rows == [[[2 * i, 2 * i + 1]] for i in range(6)]
    with pytest.raises(VectorError, match="7 rows but the documents make 6 chunks"):
        list(attach_rows(ANIMALS, np.zeros((7, 2), np.float32), chunk_words=200, overlap_words=20))
    with pytest.raises(VectorError, match="needs rows up to 5"):
        list(attach_rows(ANIMALS, np.zeros((5, 2), np.float32), chunk_words=200, overlap_words=20))


def test_cli_ingests_a_vectors_sidecar_without_embedding(
    settings: Settings, animals_beir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.setenv("RAG_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("RAG_EMBEDDER_MODEL", "hash:64")
    monkeypatch.setenv("RAG_COLLECTION", "test")
    sidecar = tmp_path / "vectors.npy"
    docs = [json.loads(line) for line in (animals_beir / "corpus.jsonl").read_text().splitlines()]
    np.save(sidecar, HashEmbedder(64).embed([passage_text(d["title"], d["text"]) for d in docs]))
    assert main(["ingest", str(animals_beir), "--quiet", "--vectors", str(sidecar)]) == 2
    assert "embedding_model" in capsys.readouterr().err
    args = ["ingest", str(animals_beir), "--quiet", "--vectors", str(sidecar), "--embedding-model", "hash:64"]
    assert main(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["chunks_given"], report["chunks_embedded"]) == (len(docs), 0)
    np.save(sidecar, np.zeros((len(docs), 32), np.float32))
    assert main([*args[:-2], "--embedding-model", "hash:64"]) == 2
    assert "32 dimensions" in capsys.readouterr().err


def test_jsonl_embedding_fields(tmp_path: Path) -> None:
    from rag.io.sources import SourceError, read_beir_jsonl

    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"_id": "a", "text": "x", "embedding": [1.0, 0.0]})
        + "\n"
        + json.dumps({"_id": "b", "text": "y", "embeddings": [[0.0, 1.0]]})
        + "\n"
    )
    a, b = read_beir_jsonl(path)
    assert a.vectors is not None and (a.vectors.field, list(a.vectors.rows)) == ("embedding", [[1.0, 0.0]])
    assert b.vectors is not None and b.vectors.field == "embeddings"
    path.write_text(json.dumps({"_id": "a", "text": "x", "embedding": [1.0], "embeddings": [[1.0]]}) + "\n")
    with pytest.raises(SourceError, match="not both"):
        list(read_beir_jsonl(path))


def test_a_delete_does_not_ask_the_embedder(settings: Settings) -> None:
    first = ingestor(settings, CountingEmbedder())
    first.ingest(ANIMALS)
    first.store.close()
    embedder = CountingEmbedder()
    ing = ingestor(settings, embedder)
    report = ing.ingest([], ["cat"])
    ing.store.close()
    assert (report.docs_deleted, embedder.texts, embedder.dim_asked) == (1, [], 0)
