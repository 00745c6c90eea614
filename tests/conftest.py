"""Shared fixtures: settings on a temp folder with the deterministic hash embedder, tiny BEIR folders."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.config import Settings, load_settings
from rag.dense.store import VectorStore
from rag.index.ingest import Ingestor
from rag.runtime import build_embedder, ingest_params, open_store
from rag.testing.servers import ProgramMissing, RedisServer, in_ci, redis_server
from rag.types import Document

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "data" / "demo"

ANIMALS = [
    Document("cat", "Cats are small domesticated carnivorous mammals that purr and hunt mice.", "Cat"),
    Document("dog", "Dogs are loyal domesticated mammals descended from wolves; they bark.", "Dog"),
    Document("owl", "Owls are nocturnal birds of prey with silent flight that hunt mice at night.", "Owl"),
    Document("salmon", "Salmon are fish that swim upstream from the ocean to spawn in rivers.", "Salmon"),
    Document("bee", "Bees are flying insects that pollinate flowers and make honey and wax.", "Bee"),
    Document("whale", "Whales are huge marine mammals that breathe air and sing underwater songs.", "Whale"),
]


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    for key in [k for k in __import__("os").environ if k.startswith("RAG_")]:
        monkeypatch.delenv(key)
    return load_settings(data_dir=tmp_path / "data", embedder_model="hash:64", collection="test")


def make_ingestor(settings: Settings) -> tuple[Ingestor, VectorStore]:
    store = open_store(settings)
    return Ingestor(ingest_params(settings), build_embedder(settings), store, progress=False), store


def write_beir(
    folder: Path, docs: list[Document], queries: dict[str, str], qrels: dict[str, dict[str, int]]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "corpus.jsonl").open("w") as fh:
        for d in docs:
            fh.write(json.dumps({"_id": d.doc_id, "title": d.title, "text": d.text}) + "\n")
    with (folder / "queries.jsonl").open("w") as fh:
        for qid, text in queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    (folder / "qrels").mkdir(exist_ok=True)
    rows = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t{s}" for q, ds in qrels.items() for d, s in ds.items()
    ]
    (folder / "qrels" / "test.tsv").write_text("\n".join(rows) + "\n")
    return folder


@pytest.fixture
def animals_beir(tmp_path: Path) -> Path:
    queries = {
        "q1": "which animals hunt mice",
        "q2": "insects making honey",
        "q3": "fish swimming up rivers",
        "salmon": "salmon spawn",  # a query whose id equals a document id (BEIR ignore_identical_ids)
    }
    qrels = {
        "q1": {"cat": 1, "owl": 1},
        "q2": {"bee": 1},
        "q3": {"salmon": 1},
        "salmon": {"salmon": 1, "whale": 1},
    }
    return write_beir(tmp_path / "animals", ANIMALS, queries, qrels)


@pytest.fixture
def redis_process(tmp_path: Path) -> Iterator[RedisServer]:
    """A real redis-server for the test (Debian's); skipped locally if missing, a failure under CI=true."""
    try:
        with redis_server(tmp_path / "redis") as server:
            yield server
    except ProgramMissing as exc:
        if in_ci():
            pytest.fail(str(exc))
        pytest.skip(str(exc))


@pytest.fixture
def redis_url(redis_process: RedisServer) -> str:
    return redis_process.url


@pytest.fixture
def anyio_backend() -> str:
    """Async tests (``pytest.mark.anyio``) run on asyncio, the service's loop."""
    return "asyncio"
