"""Quality/cost frontier of the fixed pipelines and the router's adaptive rerank, from per-query traces
(``benchmarks/router_dump.py``), plus the measured ``rag eval`` runs when given.

Every plan is recomputed offline from one trace per query: BM25 and dense rankings, their RRF fusion,
and the cross-encoder scores of the fused top 40 (a pair's score does not depend on the other pairs). The
gate (rerank only where BM25 and dense share >= g of their top 10) and depth are chosen on a *selection*
trace — the 80 SciFact train queries held out from reranker training — and reported on the test trace.

    python -m benchmarks.router_frontier --qrels ../shared/data/scifact/qrels \
        --select /work/ragbench/router_trace_validation.jsonl --select-split train \
        --report /work/ragbench/router_trace_test.jsonl --report-split test \
        --eval benchmarks/results/runs/eval_*.json --bandit-dump /work/ragbench/router_dump_test.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, write_results

from rag.io.sources import read_qrels
from rag.offline.metrics import evaluate_run, ranked_run
from rag.retrieval.rerank_depth import agreement

FIRST_STAGE_WEIGHT = 1.0  # the trained reranker's blend (rag_reranker.json); rerank() with it
RRF_K = 60
GATES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
DEPTHS = (10, 20, 30, 40)


def reranked(fused: Sequence[str], ce: Sequence[float], depth: int) -> list[str]:
    """The fused ranking with its top ``depth`` reordered as :func:`rag.rerank.cross_encoder.rerank`
    does with the model's first-stage blend."""
    if depth == 0:
        return list(fused)
    head = list(fused[:depth])
    scores = np.asarray(ce[:depth])
    ce_rank = np.empty(len(head), dtype=np.int64)
    ce_rank[np.argsort(-scores, kind="stable")] = np.arange(1, len(head) + 1)
    blended = 1.0 / (RRF_K + ce_rank) + FIRST_STAGE_WEIGHT / (RRF_K + np.arange(1, len(head) + 1))
    return [head[i] for i in np.argsort(-blended, kind="stable")] + list(fused[depth:])


class Trace:
    def __init__(self, path: Path, qrels_dir: Path, split: str) -> None:
        self.records = [json.loads(line) for line in path.read_text().splitlines() if line]
        qrels = read_qrels(qrels_dir / f"{split}.tsv")
        self.qrels = {r["qid"]: qrels[r["qid"]] for r in self.records}
        self._ndcg: dict[tuple[str, str], float] = {}

    def ndcg(self, record: dict[str, Any], key: str, ranking: list[str]) -> float:
        cached = self._ndcg.get((record["qid"], key))
        if cached is None:
            q = record["qid"]
            cached = evaluate_run({q: self.qrels[q]}, ranked_run({q: ranking[:100]}))["ndcg@10"]
            self._ndcg[(record["qid"], key)] = cached
        return cached

    def per_query(self, record: dict[str, Any], plan: str) -> float:
        if plan == "bm25":
            return self.ndcg(record, plan, [d for d, _ in record["bm25"]])
        if plan == "dense":
            return self.ndcg(record, plan, [d for d, _ in record["dense"]])
        depth = int(plan.removeprefix("rerank@")) if plan.startswith("rerank@") else 0
        return self.ndcg(record, f"rerank@{depth}", reranked(record["fused"], record["ce"], depth))

    def cost_ms(self, record: dict[str, Any], plan: str, pairs: int) -> float:
        ms = record["ms"]
        if plan == "bm25":
            return float(ms["bm25"])
        base = ms["embed"] + ms["dense"] + (0.0 if plan == "dense" else ms["bm25"])
        per_pair = ms["rerank"] / max(len(record["ce"]), 1)
        return float(base + per_pair * pairs)

    def evaluate(self, gate: float | None, depth: int, base: str = "hybrid") -> dict[str, float]:
        """Mean nDCG@10, rerank pairs and modelled cost of a plan over the trace."""
        ndcg, pairs, cost, reranked_queries = [], [], [], 0
        for r in self.records:
            if base in ("bm25", "dense"):
                d = 0
                plan = base
            else:
                share = agreement([x for x, _ in r["bm25"]], [x for x, _ in r["dense"]])
                d = depth if depth and (gate is None or share >= gate) else 0
                plan = f"rerank@{d}"
            reranked_queries += d > 0
            ndcg.append(self.per_query(r, plan))
            pairs.append(d)
            cost.append(self.cost_ms(r, base, d))
        return {
            "ndcg@10": float(np.mean(ndcg)),
            "pairs_per_query": float(np.mean(pairs)),
            "cost_ms_per_query": float(np.mean(cost)),
            "reranked_share": reranked_queries / len(self.records),
        }


def frontier(trace: Trace) -> list[dict[str, Any]]:
    rows = [
        {"plan": "bm25", "kind": "fixed", **trace.evaluate(None, 0, "bm25")},
        {"plan": "dense", "kind": "fixed", **trace.evaluate(None, 0, "dense")},
        {"plan": "hybrid", "kind": "fixed", **trace.evaluate(None, 0)},
    ]
    rows += [{"plan": f"hybrid-rerank@{d}", "kind": "fixed", **trace.evaluate(None, d)} for d in DEPTHS]
    rows += [
        {"plan": f"gate>={g}@{d}", "kind": "adaptive", "gate": g, "depth": d, **trace.evaluate(g, d)}
        for g in GATES
        if g > 0
        for d in DEPTHS
    ]
    return rows


def choose(rows: list[dict[str, Any]], budget_pairs: float) -> dict[str, Any]:
    """The adaptive plan with the best selection nDCG among those within the pair budget."""
    within = [r for r in rows if r["kind"] == "adaptive" and r["pairs_per_query"] <= budget_pairs]
    return max(within, key=lambda r: (r["ndcg@10"], -r["pairs_per_query"]))


def bandit_dump(trace: Trace, out: Path, gate: float, depth: int) -> None:
    """Per query and arm: nDCG@10, modelled cost and pairs, for ``benchmarks.bandit_sim``."""
    with out.open("w") as fh:
        for r in trace.records:
            share = agreement([x for x, _ in r["bm25"]], [x for x, _ in r["dense"]])
            gated = depth if share >= gate else 0
            arms = {
                "bm25": ("bm25", "bm25", 0),
                "hybrid": ("rerank@0", "hybrid", 0),
                "hybrid-gated": (f"rerank@{gated}", "hybrid", gated),
                "hybrid-rerank": ("rerank@40", "hybrid", 40),
            }
            fh.write(
                json.dumps(
                    {
                        "qid": r["qid"],
                        "features": r["vector"],
                        "arms": {
                            arm: {
                                "ndcg": trace.per_query(r, plan),
                                "cost_ms": trace.cost_ms(r, base, pairs),
                                "pairs": pairs,
                            }
                            for arm, (plan, base, pairs) in arms.items()
                        },
                    }
                )
                + "\n"
            )


def plot(rows: list[dict[str, Any]], evals: list[dict[str, Any]], chosen: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    fixed = [r for r in rows if r["kind"] == "fixed"]
    adaptive = [r for r in rows if r["kind"] == "adaptive"]
    left.scatter(
        [r["pairs_per_query"] for r in adaptive],
        [r["ndcg@10"] for r in adaptive],
        s=14,
        c="#9ecae1",
        label="adaptive gate × depth (test)",
    )
    left.plot(
        [r["pairs_per_query"] for r in fixed if r["plan"].startswith("hybrid")],
        [r["ndcg@10"] for r in fixed if r["plan"].startswith("hybrid")],
        "o-",
        c="#3182bd",
        label="hybrid → rerank@depth (fixed)",
    )
    for r in fixed:
        left.annotate(
            r["plan"],
            (r["pairs_per_query"], r["ndcg@10"]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    left.scatter(
        [chosen["pairs_per_query"]],
        [chosen["ndcg@10"]],
        marker="*",
        s=180,
        c="#e6550d",
        zorder=5,
        label=f"router default ({chosen['plan']}, chosen on held-out train)",
    )
    left.set_xlabel("cross-encoder pairs per query")
    left.set_ylabel("nDCG@10 (SciFact test)")
    left.legend(fontsize=7, loc="lower right")
    left.grid(alpha=0.3)
    for e in evals:
        right.scatter([e["latency_ms"]["p50"]], [e["ndcg@10"]], s=40)
        right.annotate(
            f"{e['pipeline']} ({e['rerank_pairs'] / e['queries']:.1f} pairs/q)",
            (e["latency_ms"]["p50"], e["ndcg@10"]),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
        )
    right.set_xscale("log")
    right.set_xlabel("p50 latency, ms (rag eval, 2 CPU cores, log scale)")
    right.set_ylabel("nDCG@10 (SciFact test)")
    right.set_title("measured: rag eval --pipeline …", fontsize=9)
    right.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--qrels", type=Path, required=True, help="the BEIR qrels folder")
    parser.add_argument("--select", type=Path, required=True)
    parser.add_argument("--select-split", default="train")
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--report-split", default="test")
    parser.add_argument("--pair-budget", type=float, default=0.5, help="share of hybrid-rerank@40's pairs")
    parser.add_argument("--eval", type=Path, nargs="*", default=[], help="rag eval --json outputs to show")
    parser.add_argument("--bandit-dump", type=Path)
    args = parser.parse_args()

    select = Trace(args.select, args.qrels, args.select_split)
    report = Trace(args.report, args.qrels, args.report_split)
    selection_rows = frontier(select)
    chosen_sel = choose(selection_rows, args.pair_budget * 40)
    report_rows = frontier(report)
    chosen = next(r for r in report_rows if r["plan"] == chosen_sel["plan"])
    evals = [json.loads(p.read_text()) for p in args.eval]
    if args.bandit_dump:
        bandit_dump(report, args.bandit_dump, chosen["gate"], chosen["depth"])
    plot(report_rows, evals, chosen, RESULTS / "router_frontier.png")

    full = next(r for r in report_rows if r["plan"] == "hybrid-rerank@40")
    lines = [
        "# Quality/cost frontier: fixed pipelines and the router's adaptive rerank (SciFact)",
        "",
        f"Selection: {len(select.records)} held-out {args.select_split} queries (not used to train the "
        f"reranker); report: {len(report.records)} {args.report_split} queries. Plans recomputed offline "
        "from per-query traces (`benchmarks/router_dump.py`); cost = traced ms of each step"
        " (BM25, embed, dense, cross-encoder per pair).",
        "",
        f"Chosen on selection (best nDCG@10 within {args.pair_budget:.0%} of hybrid-rerank's pairs): "
        f"**{chosen_sel['plan']}** (selection nDCG@10 {chosen_sel['ndcg@10']:.4f}, "
        f"{chosen_sel['pairs_per_query']:.1f} pairs/query).",
        "",
        "| plan (test) | nDCG@10 | vs hybrid-rerank@40 | pairs/query | pairs vs @40 | reranked share "
        "| cost ms/query |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in report_rows:
        if r["kind"] == "fixed" or r["plan"] == chosen["plan"] or r.get("depth") == chosen["depth"]:
            mark = " ◀ router default" if r["plan"] == chosen["plan"] else ""
            lines.append(
                f"| {r['plan']}{mark} | {r['ndcg@10']:.4f} | {r['ndcg@10'] / full['ndcg@10']:.1%} | "
                f"{r['pairs_per_query']:.1f} | {r['pairs_per_query'] / 40:.0%} | {r['reranked_share']:.0%} | "
                f"{r['cost_ms_per_query']:.0f} |"
            )
    if evals:
        lines += [
            "",
            "Measured end to end (`rag eval --data ../shared/data/scifact --pipeline P --json OUT`):",
            "",
            "| pipeline | nDCG@10 | Recall@100 | rerank pairs | p50 ms | p95 ms | arms |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in evals:
            arms = ", ".join(f"{k} {v}" for k, v in sorted(e.get("arms", {}).items())) or "-"
            lines.append(
                f"| {e['pipeline']} | {e['ndcg@10']:.4f} | {e['recall@100']:.4f} | {e['rerank_pairs']} | "
                f"{e['latency_ms']['p50']:.0f} | {e['latency_ms']['p95']:.0f} | {arms} |"
            )
    lines += [
        "",
        "![frontier](router_frontier.png)",
        "",
        "Reproduce: `python -m benchmarks.router_frontier ...` (see the module docstring).",
        "",
    ]
    write_results(
        "router_frontier",
        {"selection": selection_rows, "report": report_rows, "chosen": chosen, "evals": evals},
        "\n".join(lines),
    )


if __name__ == "__main__":
    main()
