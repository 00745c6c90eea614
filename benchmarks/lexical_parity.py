"""Lexical parity: BM25 from Qdrant sparse vectors (the scaled-out path) against our in-process BM25.

    python benchmarks/lexical_parity.py --data ../shared/data/scifact [--no-local]

The corpus is ingested as ``rag eval`` ingests it (chunking + analyzer, into a temporary data dir with the
cheap ``hash:64`` embedder: BM25 does not depend on the embedder), then every chunk of that version is
written into an edge shard (Qdrant's Rust engine) with the ``lexical`` sparse vector (IDF modifier) as
:class:`rag.bm25.sparse.SparseEncoder` makes it from the chunk's indexed terms. The test queries run through

- ``bm25``: :class:`rag.retrieval.retrievers.BM25Retriever` (the reference; ``rag eval --pipeline bm25``),
- ``sparse_edge``: :class:`rag.retrieval.retrievers.SparseBM25Retriever` over the edge shard,
- ``sparse_local``: the same over qdrant-client's local mode (server semantics in pure Python),
- ``sparse_edge_avgdl_x0.5`` / ``_x2``: as ``sparse_edge`` with ``avgdl`` frozen at half / twice the
  corpus mean (a collection whose first ingest had chunks half / twice as long as today's),
- ``sparse_edge_stale_20pct``: as ``sparse_edge`` with a fifth of the chunks stored twice more under
  other point ids (a superseded version's points not yet garbage-collected: in Qdrant's N and df, dropped
  from the hits by the snapshot),
- ``qdrant_bm25_*``: Qdrant's own BM25 model (``qdrant_edge.Bm25``: its tokenizer, stemmer and stopwords)
  on each chunk's passage, with Qdrant's defaults and with our k1/b,

each scored with nDCG@10 the way ``rag eval`` does (documents max-pooled over their chunks, a hit on the
query's own id ignored), plus per-query agreement with ``bm25`` (overlap of the top-10 documents) and the
CPU time per query (this process, all threads: the engine searches in its own threads).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe
from qdrant_client import QdrantClient

from benchmarks._common import write_results
from rag.bm25.scoring import top_k
from rag.bm25.sparse import SparseEncoder, mean_length, term_id
from rag.config import load_settings
from rag.dense.edge_store import EdgeStore
from rag.dense.qdrant_store import QdrantStore
from rag.dense.store import SparseVector, VectorStore
from rag.index.snapshot import IndexSnapshot
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import open_dataset
from rag.offline.metrics import evaluate_run, ranked_run
from rag.retrieval.retrievers import BM25Retriever, SparseBM25Retriever, best_chunk_per_doc
from rag.types import Hit

K = 100  # documents per query, as `rag eval` keeps (nDCG@10 reads the first 10)
DIM = 8  # the shard's dense vector: required by the store, unused here


def chunk_tokens(snapshot: IndexSnapshot) -> list[list[str]]:
    """Each chunk's indexed terms (from the version's term matrix: exactly what BM25 scores)."""
    tf, vocab = snapshot.terms.tf, snapshot.terms.vocab
    out = []
    for row in range(tf.shape[0]):
        lo, hi = tf.indptr[row], tf.indptr[row + 1]
        out.append(
            [vocab[j] for j, n in zip(tf.indices[lo:hi], tf.data[lo:hi], strict=True) for _ in range(n)]
        )
    return out


def fill(store: VectorStore, snapshot: IndexSnapshot, sparse: list[SparseVector], *, stale: int = 0) -> float:
    """Write every chunk of the version; ``stale``: that many chunks (every 5th) also written twice more
    under point ids no version uses."""
    chunks = list(snapshot.chunks)
    ids = [c.point_id for c in chunks]
    extra = list(range(0, len(chunks), 5))[:stale]
    for copy in (1, 2) if stale else ():
        ids += [str(uuid.uuid5(uuid.NAMESPACE_URL, f"stale-{copy}-{i}")) for i in extra]
        chunks += [snapshot.chunks[i] for i in extra]
        sparse = sparse + [sparse[i] for i in extra]
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((len(chunks), DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    start = time.perf_counter()
    store.ensure_collection(DIM)
    for lo in range(0, len(chunks), 1000):
        batch = chunks[lo : lo + 1000]
        store.upsert(
            ids[lo : lo + 1000],
            vectors[lo : lo + 1000],
            [{"chunk_id": c.chunk_id, "doc_id": c.doc_id, "tenant": c.tenant, "metadata": {}} for c in batch],
            sparse[lo : lo + 1000],
        )
    store.optimize()
    return time.perf_counter() - start


def model_retriever(
    snapshot: IndexSnapshot, store: VectorStore, model: qe.Bm25
) -> Callable[[str, int], list[Hit]]:
    """Qdrant's BM25 model: its query vector, the store's sparse search, max-pooled as our retrievers do."""

    def retrieve(query: str, k: int) -> list[Hit]:
        q = model.embed_query(query)
        points = store.search_sparse(SparseVector(list(q.indices), list(q.values)), limit=4 * k)
        rows = np.asarray([snapshot.point_rows[pid] for pid, _ in points], dtype=np.int64)
        scores = np.asarray([s for _, s in points])
        doc_scores, best_row = best_chunk_per_doc(rows, scores, snapshot.chunk_doc, snapshot.n_docs)
        present = np.flatnonzero(best_row >= 0)
        return [
            Hit(snapshot.doc_ids[d], float(doc_scores[d]), snapshot.chunks[best_row[d]].chunk_key)
            for d in top_k(doc_scores, k, candidates=present)
        ]

    return retrieve


def run(
    retrieve: Callable[[str, int], list[Hit]], queries: dict[str, str], qids: list[str]
) -> tuple[dict[str, list[str]], float, float]:
    """Ranked doc ids per query, CPU ms and wall ms per query."""
    for qid in qids[:10]:  # warm-up
        retrieve(queries[qid], K)
    ranked: dict[str, list[str]] = {}
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for qid in qids:
        ranked[qid] = [h.doc_id for h in retrieve(queries[qid], K)]
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return ranked, 1000 * cpu / len(qids), 1000 * wall / len(qids)


def agreement(ranked: dict[str, list[str]], reference: dict[str, list[str]]) -> dict[str, float]:
    overlap = [len(set(ranked[q][:10]) & set(reference[q][:10])) / 10 for q in reference]
    return {
        "overlap_at_10": float(np.mean(overlap)),
        "identical_top10_queries": int(sum(ranked[q][:10] == reference[q][:10] for q in reference)),
        "identical_top100_queries": int(sum(ranked[q] == reference[q] for q in reference)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", default="test")
    parser.add_argument("--no-local", action="store_true", help="skip qdrant-client local mode (slow)")
    args = parser.parse_args()
    for key in [k for k in os.environ if k.startswith("RAG_")]:
        del os.environ[key]  # the defaults `rag eval` runs with

    qrels = read_qrels(args.data / "qrels" / f"{args.split}.tsv")
    queries = read_queries(args.data / "queries.jsonl")
    qids = [q for q in qrels if q in queries]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = load_settings(data_dir=root / "data", embedder_model="hash:64", collection="parity")
        runtime = open_dataset(settings, args.data, load_reranker=False, progress=False)
        snapshot = runtime.snapshot
        params = snapshot.bm25_params
        tokens = chunk_tokens(snapshot)
        avgdl = mean_length(tokens)
        encoder = SparseEncoder(params, avgdl)
        t0 = time.perf_counter()
        sparse = encoder.documents(tokens)
        encode_s = time.perf_counter() - t0
        vocab = snapshot.terms.vocab
        distinct_ids = len({term_id(t) for t in vocab})

        results: dict[str, dict[str, Any]] = {}
        reference, cpu, wall = run(BM25Retriever(snapshot).retrieve, queries, qids)
        results["bm25"] = {"cpu_ms_per_query": cpu, "wall_ms_per_query": wall}
        runs = {"bm25": reference}

        stores: dict[str, VectorStore] = {"sparse_edge": EdgeStore(root / "edge", lexical=True)}
        if not args.no_local:
            stores["sparse_local"] = QdrantStore(QdrantClient(":memory:"), "parity", lexical=True)
        for name, store in stores.items():
            fill_s = fill(store, snapshot, sparse)
            ranked, cpu, wall = run(SparseBM25Retriever(snapshot, store).retrieve, queries, qids)
            results[name] = {"fill_s": fill_s, "cpu_ms_per_query": cpu, "wall_ms_per_query": wall}
            runs[name] = ranked
            store.close()

        stale = len(snapshot.chunks) // 10  # stored twice more: a fifth of the chunk count
        variants = {
            "sparse_edge_avgdl_x0.5": (SparseEncoder(params, avgdl / 2).documents(tokens), 0),
            "sparse_edge_avgdl_x2": (SparseEncoder(params, avgdl * 2).documents(tokens), 0),
            "sparse_edge_stale_20pct": (sparse, stale),
        }
        for name, (vectors, n_stale) in variants.items():
            store = EdgeStore(root / name, lexical=True)
            fill_s = fill(store, snapshot, vectors, stale=n_stale)
            retriever = SparseBM25Retriever(snapshot, store, stale_points=2 * n_stale)
            ranked, cpu, wall = run(retriever.retrieve, queries, qids)
            results[name] = {"fill_s": fill_s, "cpu_ms_per_query": cpu, "wall_ms_per_query": wall}
            runs[name] = ranked
            store.close()

        models = {
            "qdrant_bm25_defaults": qe.Bm25Config(),  # k 1.2, b 0.75, avg_len 256, English stem + stopwords
            "qdrant_bm25_our_k1_b": qe.Bm25Config(k=params.k1, b=params.b, avg_len=avgdl),
        }
        passages = [c.passage for c in snapshot.chunks]
        for name, config in models.items():
            model = qe.Bm25(config)
            store = EdgeStore(root / name, lexical=True)
            model_sparse = [
                SparseVector(list(v.indices), list(v.values)) for v in map(model.embed_document, passages)
            ]
            fill_s = fill(store, snapshot, model_sparse)
            ranked, cpu, wall = run(model_retriever(snapshot, store, model), queries, qids)
            results[name] = {"fill_s": fill_s, "cpu_ms_per_query": cpu, "wall_ms_per_query": wall}
            runs[name] = ranked
            store.close()
        runtime.close()

    for name, ranked in runs.items():
        results[name].update(evaluate_run(qrels, ranked_run(ranked)))
        results[name]["agreement_with_bm25"] = agreement(ranked, reference)
    data = {
        "dataset": args.data.resolve().name,
        "split": args.split,
        "queries": len(qids),
        "chunks": len(snapshot.chunks),
        "empty_chunks": int(sum(not t for t in tokens)),
        "bm25_params": {"k1": params.k1, "b": params.b, "idf": params.idf},
        "avgdl": avgdl,
        "stale_points": 2 * stale,
        "vocabulary": len(vocab),
        "distinct_term_ids": distinct_ids,
        "term_id_collisions": len(vocab) - distinct_ids,
        "encode_s": encode_s,
        "loadavg_1m_at_end": os.getloadavg()[0],
        "results": results,
    }
    write_results("lexical_parity", data, markdown(data))


def markdown(d: dict[str, Any]) -> str:
    res, n = d["results"], d["queries"]
    ref = res["bm25"]["ndcg@10"]

    def gap(name: str) -> str:
        return f"{res[name]['ndcg@10'] - ref:+.4f}"

    def overlap(name: str) -> str:
        return f"{res[name]['agreement_with_bm25']['overlap_at_10']:.3f}"

    rows = "\n".join(
        f"| {name} | {r['ndcg@10']:.4f} | {gap(name)} | {overlap(name)} "
        f"| {r['agreement_with_bm25']['identical_top10_queries']}/{n} "
        f"| {r['agreement_with_bm25']['identical_top100_queries']}/{n} "
        f"| {r['cpu_ms_per_query']:.2f} | {r['wall_ms_per_query']:.2f} |"
        for name, r in res.items()
    )
    p, edge, vocab = d["bm25_params"], res["sparse_edge"], d["vocabulary"]
    same100 = edge["agreement_with_bm25"]["identical_top100_queries"]
    local = (
        f"; qdrant-client's local mode is pure Python, {res['sparse_local']['cpu_ms_per_query']:.0f} ms"
        if "sparse_local" in res
        else ""
    )
    return f"""# Lexical parity: BM25 from Qdrant sparse vectors vs our in-process BM25 ({d["dataset"]})

    python benchmarks/lexical_parity.py --data ../shared/data/{d["dataset"]}

{n} {d["split"]} queries over {d["chunks"]} chunks ({d["empty_chunks"]} without an indexed term); BM25
k1={p["k1"]}, b={p["b"]}, idf={p["idf"]} (the service's defaults: `rag eval --pipeline bm25` = {ref:.10f}).
Term ids: 32-bit BLAKE2b of the term, {vocab} distinct terms → {d["distinct_term_ids"]} ids
({d["term_id_collisions"]} collisions). Time: CPU ms = this process's CPU time per query (all threads;
the engine searches in its own), 1-min load average {d["loadavg_1m_at_end"]:.2f} at the end on a shared
2-core machine.

| path | nDCG@10 | vs bm25 | overlap@10 | same top-10 | same top-100 | CPU ms/query | wall ms/query |
|---|---|---|---|---|---|---|---|
{rows}

## The gap, explained

**The scaled-out path (`sparse_edge`, `sparse_local`) is BM25 itself here: nDCG@10
{edge["ndcg@10"]:.10f}, {same100}/{n} queries with the same top-100 documents in the same order.**
`rag.bm25.sparse.SparseEncoder` writes each chunk's saturated, length-normalised term frequency and each
query's term counts; Qdrant's IDF modifier multiplies by `ln(1 + (N - df + 0.5) / (df + 0.5))`, which is
our `lucene` IDF. The sum is our BM25 term by term when N, df and avgdl agree, and on one freshly ingested
version they do: N = every chunk (none is empty), no stale or deleted point, avgdl frozen = the version's
({d["avgdl"]:.3f}), no hash collision; float32 values never reordered a top-100.

Where the two will part in service, each measured or bounded:
- **avgdl is frozen when a chunk is written** (points are content-addressed and outlive versions), ours
  is recomputed per version. Frozen at half the corpus mean (`sparse_edge_avgdl_x0.5`: the first ingest's
  chunks were half as long): nDCG@10 {gap("sparse_edge_avgdl_x0.5")}, overlap@10
  {overlap("sparse_edge_avgdl_x0.5")}; at twice (`_x2`): {gap("sparse_edge_avgdl_x2")}, overlap@10
  {overlap("sparse_edge_avgdl_x2")}. The writer should keep avgdl per collection and re-encode (a new
  collection) if the corpus drifts far.
- **Stale points count in N and df** until garbage collection removes them (the retriever drops them from
  the hits, not from the statistics). Deleted points count too: in the edge engine until the shard is
  reopened (`optimize` does not refresh the statistics), on a server until its optimizer drops them.
  `sparse_edge_stale_20pct` ({d["stale_points"]} extra points, every fifth chunk twice): nDCG@10
  {gap("sparse_edge_stale_20pct")}.
- **Hash collisions** merge two terms: none among the {vocab} terms here (expected n²/2³³ ≈
  {vocab**2 / 2**33:.2f} pairs; at 1M distinct terms ≈ 116 pairs, of rare terms mostly).
- **A server computes N and df per shard** (not measured here: no server): a lexical collection split
  into shards ranks each shard's points with its own statistics; keep it to one shard.
- Chunks without an indexed term get no sparse vector, so N leaves them out where ours counts them (0
  here); the `okapi` IDF cannot be expressed (refused); no pseudo-relevance feedback on this path (RM3
  needs the feedback chunks' term statistics).

**Qdrant's own BM25 model** (`qdrant_edge.Bm25`: its word tokenizer, English stopwords and Snowball
stemmer; a query weighs each distinct term 1, not its count) works in the edge engine but ranks
differently: with its defaults (k 1.2, b 0.75, avg_len 256) nDCG@10 {gap("qdrant_bm25_defaults")},
overlap@10 {overlap("qdrant_bm25_defaults")}; with our k1, b and avgdl {gap("qdrant_bm25_our_k1_b")},
overlap@10 {overlap("qdrant_bm25_our_k1_b")}. The differences are the analysis (tokens, stopword list,
length counted in its tokens) and the query weights. We keep our analyzer, so both paths index the same
terms and the embedded and the scaled-out BM25 answer alike.

**Cost**: in one process the in-process BM25 is the faster ({res["bm25"]["cpu_ms_per_query"]:.2f} vs
{edge["cpu_ms_per_query"]:.2f} CPU ms per query through the edge engine{local}), which is why embedded
mode keeps it.
"""


if __name__ == "__main__":
    main()
