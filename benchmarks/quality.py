"""Quality and latency of every pipeline and every Matryoshka dimension on a BEIR dataset.

    python benchmarks/quality.py --data ../shared/data/scifact [--reranker DIR] [--force]

Runs `rag eval` in-process (same code and settings as the CLI) for: BM25; dense at d = 64/128/256/full with
the PCA rotation and with plain truncation; hybrid at every d; hybrid-rerank (when a reranker is given).
Each run's JSON is kept under ``benchmarks/results/runs/`` and reused unless ``--force``. Writes
``quality.json``, ``quality.md`` and ``quality_latency.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks._common import RESULTS, write_results
from rag.config import load_settings
from rag.offline.evaluation import evaluate
from rag.retrieval.plan import PipelineName

PUBLISHED = [
    ("BM25 (BEIR paper)", 0.665),
    ("BM25 flat (Pyserini)", 0.679),
    ("BM25 + ms-marco-MiniLM-L-6-v2 cross-encoder (BM25 top-100)", 0.688),
    ("all-MiniLM-L6-v2 dense", 0.645),
    ("bge-small-en-v1.5 dense", 0.713),
    ("RRF of BM25 + bge-base", 0.744),
]
DIMS: list[int | None] = [64, 128, 256, None]


def run(name: str, data: Path, pipeline: str, force: bool, **overrides: Any) -> dict[str, Any]:
    cache = RESULTS / "runs" / f"{name}.json"
    if cache.exists() and not force:
        return json.loads(cache.read_text())
    settings = load_settings(**overrides)
    result = evaluate(settings, data, PipelineName.from_str(pipeline), progress=False)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(result, indent=2))
    print(f"{name}: nDCG@10 {result['ndcg@10']:.4f}  p50 {result['latency_ms']['p50']:.1f} ms")
    return result


def label(dims: int | None) -> str:
    return "full" if dims is None else str(dims)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    markers = {"bm25": "s", "dense": "o", "hybrid": "^", "hybrid-rerank": "*"}
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for row in rows:
        color = "tab:gray" if row["rotation"] == "none" else "tab:blue"
        ax.scatter(row["p50_ms"], row["ndcg@10"], marker=markers[row["pipeline"]], color=color, s=70)
        crowded = (
            row["pipeline"] in ("dense", "hybrid") and row["ndcg@10"] > 0.64 and "full" not in row["name"]
        )
        if not crowded:
            ax.annotate(
                row["name"],
                (row["p50_ms"], row["ndcg@10"]),
                fontsize=7,
                xytext=(5, -3),
                textcoords="offset points",
            )
    handles = [Line2D([], [], marker=m, linestyle="", color="black", label=p) for p, m in markers.items()]
    handles += [
        Line2D([], [], marker="o", linestyle="", color="tab:blue", label="PCA-rotated"),
        Line2D([], [], marker="o", linestyle="", color="tab:gray", label="plain truncation"),
    ]
    ax.legend(handles=handles, loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per query (ms, log scale, 2 CPU cores)")
    ax.set_ylabel("nDCG@10")
    ax.set_title("SciFact test: quality vs latency (unlabelled points: d=64/128/256 funnels, all ≥ 0.64)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--reranker", help="CrossEncoder folder for hybrid-rerank rows")
    parser.add_argument("--force", action="store_true", help="re-run evaluations even if cached")
    args = parser.parse_args()

    specs: list[tuple[str, str, dict[str, Any]]] = [("bm25", "bm25", {})]
    for rotation in ("pca", "none"):
        for d in DIMS:
            specs.append(
                (f"dense-{rotation}-{label(d)}", "dense", {"dense_dims": d, "matryoshka_rotation": rotation})
            )
        for d in DIMS[:-1]:  # the prefix alone, no full-dimension rescore: what the rotation buys directly
            specs.append(
                (
                    f"dense-{rotation}-{label(d)}-prefix-only",
                    "dense",
                    {"dense_dims": d, "matryoshka_rotation": rotation, "dense_rescore": False},
                )
            )
    for d in DIMS:
        specs.append((f"hybrid-{label(d)}", "hybrid", {"dense_dims": d}))
    if args.reranker:
        for d in (64, None):
            specs.append(
                (
                    f"hybrid-rerank-{label(d)}",
                    "hybrid-rerank",
                    {"dense_dims": d, "reranker_model": args.reranker},
                )
            )

    rows = []
    for name, pipeline, overrides in specs:
        result = run(name, args.data, pipeline, args.force, **overrides)
        rows.append(
            {
                "name": name,
                "pipeline": pipeline,
                "rotation": result["rotation"] if "dense" in result["plan"]["retrievers"] else "-",
                "dims": result["plan"]["dims"] if "dense" in result["plan"]["retrievers"] else None,
                "ndcg@10": result["ndcg@10"],
                "recall@100": result["recall@100"],
                "mrr@10": result["mrr@10"],
                "p50_ms": result["latency_ms"]["p50"],
                "p95_ms": result["latency_ms"]["p95"],
                "rerank_pairs": result["rerank_pairs"],
                "dense_scoring_work": result["dense_scoring_work"],
            }
        )
    full = {r["rotation"]: r for r in rows if r["pipeline"] == "dense" and r["name"].endswith("-full")}
    lines = [
        f"# Retrieval quality on {args.data.name} (test split)",
        "",
        f"Command: `python benchmarks/quality.py --data ../shared/data/scifact"
        f"{' --reranker <trained folder>' if args.reranker else ''}`. "
        "Latency is per query, in-process, one query at a time on 2 CPU cores (embedding included).",
        "",
        "| run | nDCG@10 | Recall@100 | MRR@10 | p50 ms | p95 ms | rerank pairs | dense work / query | "
        "dense nDCG vs full |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        base = full.get(r["rotation"]) if r["pipeline"] == "dense" else None
        keep = f"{r['ndcg@10'] / base['ndcg@10']:.1%}" if base else ""
        work = r["dense_scoring_work"]
        ratio = (
            f" ({full['pca']['dense_scoring_work'] / work:.1f}× less)"
            if work and "pca" in full and work < full["pca"]["dense_scoring_work"]
            else ""
        )
        lines.append(
            f"| {r['name']} | {r['ndcg@10']:.4f} | {r['recall@100']:.4f} | {r['mrr@10']:.4f} | "
            f"{r['p50_ms']:.1f} | "
            f"{r['p95_ms']:.1f} | {r['rerank_pairs']} | {work:,}{ratio} | {keep} |"
        )
    lines += [
        "",
        "Published nDCG@10 on SciFact test, for comparison:",
        "",
        "| system | nDCG@10 |",
        "|---|---:|",
    ]
    lines += [f"| {name} | {value:.3f} |" for name, value in PUBLISHED]
    lines += [
        "",
        "`dense work / query` = multiply-adds of an exhaustive search: `N·384` at full dimension, "
        "`N·d + prefetch·384` for the funnel (prefetch 200). `none` rows truncate the raw MiniLM vectors; "
        "`pca` rows truncate vectors rotated onto the corpus's principal axes at ingest.",
        "",
        "![quality vs latency](quality_latency.png)",
    ]
    plot(rows, RESULTS / "quality_latency.png")
    write_results(
        "quality",
        {"dataset": args.data.name, "rows": rows, "published": dict(PUBLISHED)},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
