"""Dense search cost: qdrant-client local mode vs the embedded Rust engine (qdrant-edge), full and funnel.

    python benchmarks/edge_store_speed.py --local-qdrant DIR --collection NAME --versions DIR \\
        --queries ../shared/data/scifact/queries.jsonl [--scale 100000] [--engines local edge]

Points: the rotated SciFact vectors (and payloads) of an existing local-mode collection (what ``rag eval``
ingested); queries: the SciFact queries embedded with the default embedder and the collection's rotation.
``--scale N`` adds synthetic points around the real ones: a random real vector plus Gaussian noise with
each coordinate's corpus standard deviation times ``--noise``, renormalised (so the PCA energy profile, and
so the funnel's prefixes, look like real embeddings). Reported per query: CPU-ms (process time over the
loop; the engine's own threads count too) and wall p50/p99, recall@10 vs exact, build seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from qdrant_client import QdrantClient

from benchmarks._common import write_results
from rag.dense.edge_store import EdgeStore
from rag.dense.qdrant_store import QdrantStore
from rag.dense.store import VectorStore
from rag.io.sources import read_queries

MODES: dict[str, dict[str, Any]] = {
    "full": {"dims": None},
    "funnel d64": {"dims": 64, "prefetch": 200},
    "funnel d128": {"dims": 128, "prefetch": 200},
}


def read_points(path: Path, collection: str) -> tuple[list[str], np.ndarray, list[dict[str, Any]]]:
    client = QdrantClient(path=str(path))
    ids, vectors, payloads = [], [], []
    offset = None
    while True:
        records, offset = client.scroll(
            collection, limit=1000, offset=offset, with_payload=True, with_vectors=["full"]
        )
        for r in records:
            ids.append(str(r.id))
            assert isinstance(r.vector, dict)
            vectors.append(r.vector["full"])
            payloads.append(dict(r.payload or {}))
        if offset is None:
            break
    client.close()
    return ids, np.asarray(vectors, dtype=np.float32), payloads


def synthetic(vectors: np.ndarray, n: int, noise: float, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = vectors[rng.integers(0, len(vectors), n)]
    spread = vectors.std(axis=0) * noise
    out = base + rng.standard_normal(base.shape).astype(np.float32) * spread
    return np.asarray(out / np.linalg.norm(out, axis=1, keepdims=True), dtype=np.float32)


def query_vectors(queries_file: Path, versions: Path, limit: int) -> np.ndarray:
    from rag.config import DEFAULT_EMBEDDER
    from rag.dense.embedder import SentenceTransformerEmbedder

    texts = list(read_queries(queries_file).values())[:limit]
    embedder = SentenceTransformerEmbedder(DEFAULT_EMBEDDER)
    rotation = np.load(versions / "rotation.npy")
    return np.asarray(embedder.embed(texts, batch_size=64) @ rotation, dtype=np.float32)


def fill(store: VectorStore, ids: list[str], vectors: np.ndarray, payloads: list[dict[str, Any]]) -> float:
    start = time.perf_counter()
    store.ensure_collection(vectors.shape[1])
    for i in range(0, len(ids), 1000):
        store.upsert(ids[i : i + 1000], vectors[i : i + 1000], payloads[i : i + 1000])
    store.optimize()
    return time.perf_counter() - start


def timed(
    store: VectorStore, queries: np.ndarray, limit: int, **kw: Any
) -> tuple[dict[str, float], list[set[str]]]:
    for q in queries[:10]:
        store.search(q, limit=limit, **kw)  # warm-up
    walls, tops = [], []
    cpu0 = time.process_time()
    for q in queries:
        t0 = time.perf_counter()
        hits = store.search(q, limit=limit, **kw)
        walls.append(time.perf_counter() - t0)
        tops.append({pid for pid, _ in hits[:10]})
    cpu = time.process_time() - cpu0
    ms = np.asarray(walls) * 1000
    return {
        "cpu_ms": 1000 * cpu / len(queries),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }, tops


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--local-qdrant", type=Path, required=True)
    ap.add_argument("--collection", required=True)
    ap.add_argument("--versions", type=Path, required=True, help="the collection's versions folder")
    ap.add_argument("--queries", type=Path, required=True)
    ap.add_argument("--n-queries", type=int, default=300)
    ap.add_argument("--limit", type=int, default=100, help="points per search (the pipeline's candidates)")
    ap.add_argument("--scale", type=int, default=0, help="total points, synthetic ones added (0: real only)")
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--engines", nargs="+", default=["local", "edge-plain", "edge"])
    ap.add_argument("--load", default="unknown", help="what else ran on the machine (for the record)")
    ap.add_argument("--name", default="edge_store_speed")
    args = ap.parse_args()

    ids, vectors, payloads = read_points(args.local_qdrant, args.collection)
    if args.scale > len(ids):
        extra = synthetic(vectors, args.scale - len(ids), args.noise, seed=0)
        ids += [f"00000000-0000-4000-8000-{i:012d}" for i in range(len(extra))]
        payloads += [
            {"tenant": "", "chunk_id": f"s{i}", "doc_id": f"s{i}", "metadata": {}} for i in range(len(extra))
        ]
        vectors = np.concatenate([vectors, extra])
    queries = query_vectors(args.queries, args.versions, args.n_queries)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        exact: dict[str, list[set[str]]] = {}
        for engine in args.engines:
            if engine == "local":
                store: VectorStore = QdrantStore(QdrantClient(":memory:"), "bench")
            else:
                store = EdgeStore(
                    Path(tmp) / engine,
                    hnsw=engine == "edge",
                    indexing_threshold_kb=1 if engine == "edge" else 10_000,
                )
            build_s = fill(store, ids, vectors, payloads)
            for mode, kw in MODES.items():
                stats, tops = timed(store, queries, args.limit, **kw)
                if mode not in exact:  # the first engine's answers are exact (local / plain)
                    exact[mode] = tops
                recall = float(np.mean([len(a & b) / 10 for a, b in zip(tops, exact[mode], strict=True)]))
                rows.append(
                    {
                        "engine": engine,
                        "mode": mode,
                        "points": len(ids),
                        "build_s": build_s,
                        "recall@10": recall,
                        **stats,
                    }
                )
                print(json.dumps(rows[-1]))
            store.close()
    lines = [
        f"# Dense search: local mode vs qdrant-edge ({len(ids)} points, {len(queries)} SciFact queries, "
        f"limit {args.limit})",
        "",
        f"Load while measured: {args.load}. CPU-ms = process time per query (engine threads included).",
        "",
        "| engine | mode | CPU-ms/query | p50 ms | p99 ms | recall@10 vs exact | build s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['engine']} | {r['mode']} | {r['cpu_ms']:.2f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['recall@10']:.3f} | {r['build_s']:.1f} |"
        )
    write_results(
        args.name,
        {"rows": rows, "load": args.load, "args": {k: str(v) for k, v in vars(args).items()}},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
