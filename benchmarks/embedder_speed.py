"""Embedder backends on this machine: torch (sentence-transformers) vs onnxruntime fp32 vs dynamic int8.

    python benchmarks/embedder_speed.py --data ../shared/data/scifact [--queries 200] [--passages 512]

One process, all three backends loaded, measured in alternating rounds (the order rotates each round) so
load from other processes hits them alike. Query embedding: one text per call, process CPU time (all
threads) and wall time per query. Ingest: passages (title + text, as the corpus gives them) in batches of
``--batch``, passages per second of wall time and CPU-ms per passage. Fidelity: cosine of each vector to
torch's (min and mean). The ONNX files are exported into ``--cache`` on first use (not timed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import write_results
from rag.config import load_settings
from rag.dense.embedder import Embedder
from rag.io.sources import read_queries
from rag.runtime import build_embedder

BACKENDS = ("torch", "onnx", "onnx-int8")


def _passages(corpus: Path, n: int) -> list[str]:
    out = []
    with corpus.open() as fh:
        for line in fh:
            doc = json.loads(line)
            out.append(f"{doc.get('title', '')} {doc['text']}".strip())
            if len(out) == n:
                break
    return out


def _timed(fn: Any) -> tuple[Any, float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - cpu, time.perf_counter() - wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--passages", type=int, default=512)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/rag-embedder-speed"))
    args = parser.parse_args()

    queries = list(read_queries(args.data / "queries.jsonl").values())[: args.queries]
    passages = _passages(args.data / "corpus.jsonl", args.passages)
    base = load_settings(data_dir=args.cache)
    embedders: dict[str, Embedder] = {}
    for backend in BACKENDS:
        embedder = build_embedder(base.model_copy(update={"embedder_backend": backend}))
        embedder.warm_up()
        embedder.embed(queries[:8])
        embedders[backend] = embedder

    query_cpu: dict[str, list[float]] = {b: [] for b in BACKENDS}
    query_wall: dict[str, list[float]] = {b: [] for b in BACKENDS}
    ingest_cpu: dict[str, list[float]] = {b: [] for b in BACKENDS}
    ingest_wall: dict[str, list[float]] = {b: [] for b in BACKENDS}
    vectors: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(args.rounds):
        order = BACKENDS[r % 3 :] + BACKENDS[: r % 3]
        for backend in order:
            embedder = embedders[backend]
            q_vecs, cpu, wall = _timed(lambda e=embedder: np.vstack([e.embed([q]) for q in queries]))
            query_cpu[backend].append(1000 * cpu / len(queries))
            query_wall[backend].append(1000 * wall / len(queries))
            p_vecs, cpu, wall = _timed(lambda e=embedder: e.embed(passages, batch_size=args.batch))
            ingest_cpu[backend].append(1000 * cpu / len(passages))
            ingest_wall[backend].append(len(passages) / wall)
            vectors[backend] = (q_vecs, p_vecs)

    rows = []
    for backend in BACKENDS:
        cos_q = (vectors[backend][0] * vectors["torch"][0]).sum(axis=1)
        cos_p = (vectors[backend][1] * vectors["torch"][1]).sum(axis=1)
        rows.append(
            {
                "backend": backend,
                "query_cpu_ms": float(np.median(query_cpu[backend])),
                "query_wall_ms": float(np.median(query_wall[backend])),
                "ingest_passages_per_s": float(np.median(ingest_wall[backend])),
                "ingest_cpu_ms_per_passage": float(np.median(ingest_cpu[backend])),
                "cosine_to_torch_min": float(min(cos_q.min(), cos_p.min())),
                "cosine_to_torch_mean": float(np.concatenate([cos_q, cos_p]).mean()),
                "rounds": {
                    "query_cpu_ms": query_cpu[backend],
                    "ingest_passages_per_s": ingest_wall[backend],
                },
            }
        )
        print(rows[-1])
    lines = [
        f"# Embedder backends ({len(queries)} {args.data.name} queries one by one, {len(passages)} passages "
        f"in batches of {args.batch}; median of {args.rounds} alternating rounds)",
        "",
        f"Command: `python benchmarks/embedder_speed.py --data ../shared/data/{args.data.name} "
        f"--queries {args.queries} --passages {args.passages} --rounds {args.rounds}`",
        "",
        "| backend | query CPU-ms | query wall ms | ingest passages/s | ingest CPU-ms / passage "
        "| cosine to torch (min / mean) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['backend']} | {r['query_cpu_ms']:.2f} | {r['query_wall_ms']:.2f} | "
            f"{r['ingest_passages_per_s']:.1f} | {r['ingest_cpu_ms_per_passage']:.1f} | "
            f"{r['cosine_to_torch_min']:.4f} / {r['cosine_to_torch_mean']:.4f} |"
        )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    write_results("embedder_speed", {"rows": rows, "args": settings}, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
