"""The systems that ``benchmarks/peers.py`` compares, one class each, run inside a worker process.

Each is built the way its documentation shows, with the settings a user would pass to compare fairly: the
local all-MiniLM-L6-v2 folder, normalised embeddings with cosine, ``candidates`` per retriever, top 10
after fusion. The peers' libraries and ``rag`` are imported inside the classes: a worker imports only
what its system needs (the peers' venv has no ``rag``; the service's venv has no peers).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Protocol

from benchmarks.peers import peak_rss_mib, rrf

TOP_K = 10


class System(Protocol):
    def load(self) -> None:
        """Load the models (not counted as build time)."""

    def build(self, docs: list[tuple[str, str]]) -> None:
        """Index the documents: (id, title + " " + text)."""

    def search(self, text: str) -> list[str]:
        """Ranked document ids, top 10; safe to call from several threads at once."""

    def cpu_seconds(self) -> float: ...

    def peak_rss_mib(self) -> float: ...

    def describe(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


class _InProcess:
    """CPU time and peak RSS of this worker process."""

    def cpu_seconds(self) -> float:
        return time.process_time()

    def peak_rss_mib(self) -> float:
        return peak_rss_mib()

    def close(self) -> None:
        pass


def _versions(*packages: str) -> dict[str, str]:
    from importlib.metadata import version

    return {p: version(p) for p in packages}


class Haystack(_InProcess):
    """InMemoryDocumentStore (cosine); query pipeline: SentenceTransformersTextEmbedder ->
    InMemoryEmbeddingRetriever and InMemoryBM25Retriever -> DocumentJoiner(reciprocal_rank_fusion)."""

    def __init__(self, model: str, candidates: int) -> None:
        self.model, self.candidates = model, candidates

    def load(self) -> None:
        from haystack_integrations.components.embedders.sentence_transformers import (
            SentenceTransformersDocumentEmbedder,
            SentenceTransformersTextEmbedder,
        )

        common = {"model": self.model, "normalize_embeddings": True, "local_files_only": True}
        self.doc_embedder = SentenceTransformersDocumentEmbedder(**common, progress_bar=False)
        self.text_embedder = SentenceTransformersTextEmbedder(**common, progress_bar=False)
        self.doc_embedder.warm_up()
        self.text_embedder.warm_up()

    def build(self, docs: list[tuple[str, str]]) -> None:
        from haystack import Document, Pipeline
        from haystack.components.joiners import DocumentJoiner
        from haystack.components.retrievers.in_memory import (
            InMemoryBM25Retriever,
            InMemoryEmbeddingRetriever,
        )
        from haystack.document_stores.in_memory import InMemoryDocumentStore

        store = InMemoryDocumentStore(embedding_similarity_function="cosine")
        embedded = self.doc_embedder.run([Document(id=i, content=t) for i, t in docs])["documents"]
        store.write_documents(embedded)
        pipe = Pipeline()
        pipe.add_component("text_embedder", self.text_embedder)
        pipe.add_component("dense", InMemoryEmbeddingRetriever(store, top_k=self.candidates))
        pipe.add_component("bm25", InMemoryBM25Retriever(store, top_k=self.candidates))
        pipe.add_component("joiner", DocumentJoiner(join_mode="reciprocal_rank_fusion", top_k=TOP_K))
        pipe.connect("text_embedder.embedding", "dense.query_embedding")
        pipe.connect("dense", "joiner")
        pipe.connect("bm25", "joiner")
        self.pipe = pipe

    def search(self, text: str) -> list[str]:
        out = self.pipe.run({"text_embedder": {"text": text}, "bm25": {"query": text}})
        return [d.id for d in out["joiner"]["documents"]]

    def describe(self) -> dict[str, Any]:
        return {
            "versions": _versions("haystack-ai", "sentence-transformers-haystack", "sentence-transformers"),
            "notes": "BM25L (InMemoryDocumentStore's default); RRF as DocumentJoiner computes it",
        }


class LlamaIndex(_InProcess):
    """VectorStoreIndex over TextNodes (SimpleVectorStore, in memory) + BM25Retriever (bm25s + PyStemmer),
    fused by QueryFusionRetriever(mode="reciprocal_rerank", num_queries=1: no LLM query generation)."""

    def __init__(self, model: str, candidates: int) -> None:
        self.model, self.candidates = model, candidates

    def load(self) -> None:
        from llama_index.embeddings.huggingface import HuggingFaceEmbedding

        # max_length 256: the model's own max_seq_length (the class's default is 512); batches of 32 as
        # every other system here
        self.embed = HuggingFaceEmbedding(
            model_name=self.model,
            device="cpu",
            max_length=256,
            embed_batch_size=32,  # default 10
        )

    def build(self, docs: list[tuple[str, str]]) -> None:
        import Stemmer
        from llama_index.core import VectorStoreIndex
        from llama_index.core.llms.mock import MockLLM
        from llama_index.core.retrievers import QueryFusionRetriever
        from llama_index.core.schema import TextNode
        from llama_index.retrievers.bm25 import BM25Retriever

        nodes = [TextNode(id_=i, text=t) for i, t in docs]
        index = VectorStoreIndex(nodes, embed_model=self.embed)
        dense = index.as_retriever(similarity_top_k=self.candidates)
        bm25 = BM25Retriever.from_defaults(
            nodes=nodes, similarity_top_k=self.candidates, stemmer=Stemmer.Stemmer("english"), language="en"
        )
        # use_async=False: the default runs both retrievers as coroutines on an event loop per call,
        # which breaks when several threads call retrieve at once; both retrievers are synchronous anyway
        self.fusion = QueryFusionRetriever(
            [dense, bm25],
            llm=MockLLM(),
            mode="reciprocal_rerank",
            similarity_top_k=TOP_K,
            num_queries=1,
            use_async=False,
        )

    def search(self, text: str) -> list[str]:
        return [n.node.node_id for n in self.fusion.retrieve(text)]

    def describe(self) -> dict[str, Any]:
        return {
            "versions": _versions(
                "llama-index-core", "llama-index-retrievers-bm25", "llama-index-embeddings-huggingface"
            ),
        }


class HandWired(_InProcess):
    """qdrant-client local mode on disk + sentence-transformers + bm25s (English stopwords, Snowball
    stemmer) + reciprocal rank fusion (k = 60)."""

    def __init__(self, model: str, candidates: int) -> None:
        self.model, self.candidates = model, candidates
        self.tmp = tempfile.mkdtemp(prefix="peers-qdrant-")

    def load(self) -> None:
        import Stemmer
        from sentence_transformers import SentenceTransformer

        self.encoder = SentenceTransformer(self.model, device="cpu", local_files_only=True)
        self.stemmer = Stemmer.Stemmer("english")

    def build(self, docs: list[tuple[str, str]]) -> None:
        import bm25s
        from qdrant_client import QdrantClient, models

        vectors = self.encoder.encode([t for _, t in docs], batch_size=32, normalize_embeddings=True)
        self.client = QdrantClient(path=self.tmp)
        self.client.create_collection(
            "docs", vectors_config=models.VectorParams(size=vectors.shape[1], distance=models.Distance.COSINE)
        )
        self.client.upload_points(
            "docs",
            [
                models.PointStruct(id=n, vector=v.tolist(), payload={"doc_id": i})
                for n, ((i, _), v) in enumerate(zip(docs, vectors, strict=True))
            ],
        )
        self.ids = [i for i, _ in docs]
        self.bm25 = bm25s.BM25()
        self.bm25.index(
            bm25s.tokenize([t for _, t in docs], stopwords="en", stemmer=self.stemmer, show_progress=False),
            show_progress=False,
        )

    def search(self, text: str) -> list[str]:
        import bm25s

        vector = self.encoder.encode(text, normalize_embeddings=True)
        points = self.client.query_points("docs", query=vector.tolist(), limit=self.candidates).points
        dense = [str(p.payload["doc_id"]) for p in points if p.payload]
        tokens = bm25s.tokenize(
            [text], stopwords="en", stemmer=self.stemmer, return_ids=False, show_progress=False
        )
        k = min(self.candidates, len(self.ids))
        hits, _ = self.bm25.retrieve(tokens, k=k, show_progress=False, n_threads=1)
        return rrf([dense, [self.ids[j] for j in hits[0]]], top_k=TOP_K)

    def describe(self) -> dict[str, Any]:
        return {"versions": _versions("qdrant-client", "sentence-transformers", "bm25s")}

    def close(self) -> None:
        client = getattr(self, "client", None)
        if client is not None:
            client.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class RagInProcess(_InProcess):
    """This service's runtime in this process: the ingest path into a fresh data dir, then the search
    pipeline with the deployment's ``hybrid`` plan (as ``rag eval --pipeline hybrid`` runs it)."""

    def __init__(self, folder: Path, candidates: int) -> None:
        self.folder, self.candidates = folder, candidates
        self.tmp = tempfile.mkdtemp(prefix="peers-rag-")

    def load(self) -> None:
        from rag.config import load_settings
        from rag.runtime import build_embedder

        self.settings = load_settings(data_dir=Path(self.tmp), collection="peers", candidates=self.candidates)
        self.embedder = build_embedder(self.settings)
        self.embedder.warm_up()

    def build(self, docs: list[tuple[str, str]]) -> None:
        from rag.dense.qdrant_store import QdrantStore
        from rag.index.ingest import Ingestor
        from rag.io.sources import read_beir_jsonl
        from rag.retrieval.plan import PipelineName
        from rag.rollout.config import RolloutConfig
        from rag.routing.router import deployment_plan
        from rag.runtime import Runtime, connect, ingest_params

        store = QdrantStore(connect(self.settings), self.settings.collection)
        Ingestor(ingest_params(self.settings), self.embedder, store, progress=False).ingest(
            read_beir_jsonl(self.folder / "corpus.jsonl")
        )
        self.runtime = Runtime.open(self.settings, load_reranker=False, store=store, embedder=self.embedder)
        limits = RolloutConfig.load(self.settings.rollout_config).profile_limits(self.settings.profile)
        self.plan = deployment_plan(
            PipelineName.HYBRID, self.settings, limits, top_k=TOP_K, reranker_available=False
        )

    def search(self, text: str) -> list[str]:
        return [h.doc_id for h in self.runtime.pipeline.search(text, self.plan).hits[:TOP_K]]

    def describe(self) -> dict[str, Any]:
        from rag.dense.embedder import resolve_model_path

        return {
            "embedder": self.settings.embedder_model,
            "model_folder": resolve_model_path(self.settings.embedder_model),
            "plan": {"retrievers": list(self.plan.retrievers), "candidates": self.plan.candidates},
            "notes": "chunks of 300 words (50 overlap), ranked doc ids deduplicated when scored",
        }

    def close(self) -> None:
        runtime = getattr(self, "runtime", None)
        if runtime is not None:
            runtime.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


KEY = "peers-bench-key-0123456789abcdef"
TENANT = "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


class RagHttp:
    """``rag ingest`` then ``rag serve`` as subprocesses (this venv's python), POST /query with the cache
    off, one keep-alive connection per client thread. CPU time and peak RSS are the server's."""

    def __init__(self, folder: Path, candidates: int) -> None:
        self.folder = folder
        self.tmp = tempfile.mkdtemp(prefix="peers-rag-http-")
        self.local = threading.local()
        self.routes: dict[str, int] = {}
        self.lock = threading.Lock()
        self.server: subprocess.Popen[bytes] | None = None
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {
            "RAG_DATA_DIR": self.tmp,
            "RAG_COLLECTION": "peers",
            "RAG_API_KEYS": f"{TENANT}:{KEY}",
            "RAG_RATE_LIMIT_QPS": "0",
            "RAG_LOG_LEVEL": "WARNING",
            "RAG_PORT": str(self.port),
            "RAG_CACHE_ENABLED": "false",
            "RAG_CANDIDATES": str(candidates),
            "RAG_DEADLINE_MS": "10000",  # throughput, not how many answers the 500 ms default degrades
        }

    def build(self, docs: list[tuple[str, str]]) -> None:
        """``rag ingest`` in its own process: its time includes loading the model there."""
        cmd = [sys.executable, "-m", "rag", "ingest", str(self.folder / "corpus.jsonl")]
        subprocess.run([*cmd, "--tenant", TENANT, "--quiet"], env=self.env, check=True)

    def load(self) -> None:
        """Nothing before the index exists; the server starts after :meth:`build`."""

    def start(self) -> float:
        started = time.perf_counter()
        self.server = subprocess.Popen([sys.executable, "-m", "rag", "serve"], env=self.env)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1) as r:
                    if r.status == 200:
                        return time.perf_counter() - started
            except OSError:
                pass
            if self.server.poll() is not None:
                raise RuntimeError("rag serve exited during start-up")
            time.sleep(0.2)
        raise TimeoutError("rag serve did not become ready in 300 s")

    def search(self, text: str) -> list[str]:
        if self.server is None:
            self.ready_s = self.start()
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        body = json.dumps({"query": text, "top_k": TOP_K})
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
        conn.request("POST", "/query", body=body, headers=headers)
        response = conn.getresponse()
        payload = json.loads(response.read())
        if response.status != 200:
            raise RuntimeError(f"POST /query answered {response.status}: {payload}")
        with self.lock:
            self.routes[payload["route"]] = self.routes.get(payload["route"], 0) + 1
        return [r["doc_id"] for r in payload["results"]]

    def cpu_seconds(self) -> float:
        assert self.server is not None
        fields = Path(f"/proc/{self.server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime

    def peak_rss_mib(self) -> float:
        assert self.server is not None
        for line in Path(f"/proc/{self.server.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
        return 0.0

    def describe(self) -> dict[str, Any]:
        return {
            "routes": dict(self.routes),
            "server_ready_s": getattr(self, "ready_s", None),
            "client_cpu_s": time.process_time(),
            "notes": "build_s is `rag ingest` as a process (model load included)",
        }

    def close(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.send_signal(signal.SIGINT)
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def make(name: str, *, model: str, candidates: int, folder: Path) -> System:
    """The system named ``name``; the peers get the model folder, this service uses its own setting
    (the bundled alias resolves to the same folder)."""
    if name == "haystack":
        return Haystack(model, candidates)
    if name == "llamaindex":
        return LlamaIndex(model, candidates)
    if name == "handwired":
        return HandWired(model, candidates)
    if name == "rag":
        return RagInProcess(folder, candidates)
    if name == "rag-http":
        return RagHttp(folder, candidates)
    raise ValueError(f"unknown system {name!r}; choose from haystack, llamaindex, handwired, rag, rag-http")
