"""The confidence scale on a BEIR folder: fitted on the train split, shown on test.

    RAG_DATA_DIR=... python benchmarks/calibration.py --data ../shared/data/scifact

Runs the served hybrid plan (``rag eval``'s: the deployment profile's defaults) over every judged query of
both splits through the real pipeline, keeps each query's top 10 with the evidence the service returns
(:func:`rag.retrieval.explain.explain`), and fits :class:`rag.index.calibration.ScoreCalibration` on the
train split (as ``rag tune --data DIR --split train`` fits it; the BM25-only and dense-only leg sets are read
from the same run's lists). On the test split, which the fit never saw: the reliability table (predicted
vs observed relevance rate per confidence bucket), Brier score and expected calibration error per leg set,
and the share of test queries that abstain at two ``min_score`` thresholds, with what abstaining cost
(how many of them had a relevant document in their top 10). Also the cost of the evidence itself: process
CPU time of building the results with and without it, and of encoding them to JSON, over the same outcomes.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import write_results
from rag.config import load_settings
from rag.fusion import FusionChoice
from rag.index.calibration import CALIBRATION_DEPTH, ScoreCalibration
from rag.index.tuning import CollectionTuning
from rag.io.sources import read_qrels, read_queries
from rag.offline.calibration import Samples, add_samples, outcomes
from rag.offline.datasets import dataset_collection, open_dataset
from rag.retrieval.explain import BM25, DENSE
from rag.retrieval.plan import PipelineName
from rag.retrieval.step_runner import SearchOutcome
from rag.rollout.config import RolloutConfig
from rag.routing.router import deployment_plan
from rag.runtime import Runtime
from rag.types import Result

BUCKETS = np.linspace(0.0, 1.0, 11)
THRESHOLDS = (0.2, 0.5)


def run_split(
    runtime: Runtime, data: Path, split: str, plan: Any
) -> tuple[list[str], list[set[str]], list[SearchOutcome]]:
    qrels = read_qrels(data / "qrels" / f"{split}.tsv")
    texts = read_queries(data / "queries.jsonl")
    qids = [q for q in qrels if q in texts]
    outs = [runtime.pipeline.search(texts[q], plan) for q in qids]
    relevant = [{d for d, g in qrels[q].items() if g > 0} for q in qids]
    return qids, relevant, outs


def samples_of(relevant: list[set[str]], outs: list[SearchOutcome], fusion: FusionChoice) -> Samples:
    samples: Samples = {}
    for rel, out in zip(relevant, outs, strict=True):
        runs = outcomes(out.lists[BM25], out.lists[DENSE], fusion)
        runs["bm25+dense"] = out  # the served run itself (its fusion is the plan's)
        add_samples(samples, runs, rel)
    return samples


def reliability(pairs: list[tuple[float, bool]]) -> dict[str, Any]:
    p = np.array([c for c, _ in pairs])
    y = np.array([1.0 if r else 0.0 for _, r in pairs])
    rows, ece = [], 0.0
    for lo, hi in itertools.pairwise(BUCKETS):
        inside = (p >= lo) & ((p < hi) if hi < 1.0 else (p <= hi))
        n = int(inside.sum())
        if n:
            pred, obs = float(p[inside].mean()), float(y[inside].mean())
            ece += n / len(p) * abs(pred - obs)
            rows.append({"bucket": f"{lo:.1f}-{hi:.1f}", "n": n, "predicted": pred, "observed": obs})
        else:
            rows.append({"bucket": f"{lo:.1f}-{hi:.1f}", "n": 0, "predicted": None, "observed": None})
    return {
        "pairs": len(p),
        "base_rate": float(y.mean()),
        "brier": float(np.mean((p - y) ** 2)),
        "brier_of_base_rate": float(np.mean((y.mean() - y) ** 2)),
        "ece": ece,
        "table": rows,
    }


def _confidence(result: Result) -> float:
    e = result.evidence
    return e.confidence if e is not None and e.confidence is not None else 0.0


def evidence_cost(
    runtime: Runtime, outs: list[SearchOutcome], repeats: int, texts: list[str], plan: Any
) -> dict[str, float]:
    """Process CPU µs per query of building the top 10 results without and with evidence (+ confidence),
    and of encoding them as the response does."""
    from api.schemas import ResultOut

    pipeline = runtime.pipeline

    def cpu_us(fn: Any) -> float:
        start = time.process_time()
        for _ in range(repeats):
            for out in outs:
                fn(out)
        return (time.process_time() - start) * 1e6 / (repeats * len(outs))

    def encode(results: Any) -> None:
        for r in results:
            ResultOut.model_validate(r, from_attributes=True).model_dump_json()

    plain = cpu_us(lambda o: pipeline.results(o.hits, CALIBRATION_DEPTH))
    explained = cpu_us(lambda o: pipeline.results(o.hits, CALIBRATION_DEPTH, outcome=o))
    plain_json = cpu_us(lambda o: encode(pipeline.results(o.hits, CALIBRATION_DEPTH)))
    explained_json = cpu_us(lambda o: encode(pipeline.results(o.hits, CALIBRATION_DEPTH, outcome=o)))
    # the whole query the same way (search + results + JSON), plain and with evidence interleaved query by
    # query so drift in the machine's load falls on both alike
    totals = {"plain": 0.0, "evidence": 0.0}
    for text in texts:
        for name, with_evidence in (("plain", False), ("evidence", True)):
            start = time.process_time()
            out = pipeline.search(text, plan)
            encode(pipeline.results(out.hits, CALIBRATION_DEPTH, outcome=out if with_evidence else None))
            totals[name] += time.process_time() - start
    return {
        "query_cpu_ms_plain": totals["plain"] * 1e3 / len(texts),
        "query_cpu_ms_with_evidence": totals["evidence"] * 1e3 / len(texts),
        "results_us": plain,
        "results_with_evidence_us": explained,
        "results_and_json_us": plain_json,
        "results_and_json_with_evidence_us": explained_json,
        "added_us": explained_json - plain_json,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--repeats", type=int, default=20, help="passes of the evidence-cost loop")
    parser.add_argument("--cost-queries", type=int, default=100, help="whole queries timed each way")
    args = parser.parse_args()
    settings = load_settings()
    if settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(args.data, settings)})
    runtime = open_dataset(settings, args.data, load_reranker=False, progress=False)
    try:
        limits = RolloutConfig.load(settings.rollout_config).profile_limits(settings.profile)
        fusion = runtime.snapshot.tuned_fusion
        plan = deployment_plan(
            PipelineName.HYBRID,
            settings,
            limits,
            top_k=CALIBRATION_DEPTH,
            reranker_available=False,
            fusion=fusion,
        )
        choice = FusionChoice(plan.fusion, dict(plan.weights), plan.rrf_k)
        runtime.warm_up()
        started = time.perf_counter()
        _, train_rel, train_outs = run_split(runtime, args.data, "train", plan)
        test_qids, test_rel, test_outs = run_split(runtime, args.data, "test", plan)
        run_s = time.perf_counter() - started
        calibration = ScoreCalibration.fit(
            samples_of(train_rel, train_outs, choice), f"labelled: {args.data.resolve().name}/train"
        )
        test = samples_of(test_rel, test_outs, choice)
        per_legs = {
            legs: reliability([(calibration.confidence(e, legs) or 0.0, rel) for e, rel in pairs])
            for legs, pairs in test.items()
        }
        # the service's own path from here: the version carries the fitted scale as `rag tune` stores it,
        # and pipeline.results reads each result's confidence from it
        snapshot = runtime.snapshot
        snapshot.tuning = CollectionTuning(
            snapshot.bm25_params, choice, calibration.source, snapshot.version, {}, calibration
        )
        served = [runtime.pipeline.results(out.hits, CALIBRATION_DEPTH, outcome=out) for out in test_outs]
        best = [max((_confidence(r) for r in rs), default=0.0) for rs in served]
        found = [any(r.doc_id in rel for r in rs) for rs, rel in zip(served, test_rel, strict=True)]
        abstain = {
            f"{t:g}": {
                "share": float(np.mean([b < t for b in best])),
                "queries": int(sum(b < t for b in best)),
                "of_which_had_a_relevant_in_top10": int(
                    sum(b < t and f for b, f in zip(best, found, strict=True))
                ),
                "kept_results_share": float(
                    np.mean([sum(_confidence(r) >= t for r in rs) / max(len(rs), 1) for rs in served])
                ),
            }
            for t in THRESHOLDS
        }
        queries = read_queries(args.data / "queries.jsonl")
        cost = evidence_cost(
            runtime, test_outs, args.repeats, [queries[q] for q in test_qids[: args.cost_queries]], plan
        )
    finally:
        runtime.close()
    data = {
        "dataset": args.data.resolve().name,
        "plan": {
            "route": plan.route,
            "fusion": plan.fusion.value,
            "weights": plan.weights,
            "rrf_k": plan.rrf_k,
        },
        "fitted_on": "train",
        "shown_on": "test",
        "test_queries": len(test_qids),
        "depth": CALIBRATION_DEPTH,
        "calibration": calibration.to_json(),
        "reliability": per_legs,
        "abstention": abstain,
        "evidence_cost": cost,
        "pipeline_seconds": round(run_s, 1),
    }
    data["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]  # timings are process CPU
    write_results("calibration", data, markdown(data))


def markdown(d: dict[str, Any]) -> str:
    lines = [
        f"# Calibrated confidence on {d['dataset']}: fitted on train, shown on test "
        f"({d['test_queries']} queries)",
        "",
        "`python benchmarks/calibration.py --data DIR` (the served hybrid plan, each query's top "
        f"{d['depth']}; the model: `rag.index.calibration`, a logistic regression per leg set over the "
        "evidence each result carries — fitted as `rag tune` fits it).",
        "",
    ]
    for legs, rel in d["reliability"].items():
        lines += [
            f"## {legs} ({rel['pairs']} results; base rate {rel['base_rate']:.3f}; "
            f"Brier {rel['brier']:.4f} vs {rel['brier_of_base_rate']:.4f} for the base rate; "
            f"ECE {rel['ece']:.4f})",
            "",
            "| confidence | results | mean predicted | observed relevant |",
            "|---|---:|---:|---:|",
        ]
        for row in rel["table"]:
            if row["n"]:
                lines.append(
                    f"| {row['bucket']} | {row['n']} | {row['predicted']:.3f} | {row['observed']:.3f} |"
                )
        lines.append("")
    lines += [
        "## Abstention (served hybrid, `min_score` on the best result's confidence)",
        "",
        "| min_score | queries abstaining | share | of them with a relevant doc in the top 10 "
        "| results kept (mean share) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for t, a in d["abstention"].items():
        lines.append(
            f"| {t} | {a['queries']} | {a['share']:.3f} | {a['of_which_had_a_relevant_in_top10']} | "
            f"{a['kept_results_share']:.3f} |"
        )
    c = d["evidence_cost"]
    lines += [
        "",
        "## What the evidence costs (process CPU per query, top 10, same outcomes)",
        "",
        f"results {c['results_us']:.1f} µs → with evidence + confidence "
        f"{c['results_with_evidence_us']:.1f} µs; with JSON encoding {c['results_and_json_us']:.1f} → "
        f"{c['results_and_json_with_evidence_us']:.1f} µs: "
        f"**+{c['added_us']:.1f} µs per query**. Whole query in process (search + results + JSON, "
        f"interleaved): {c['query_cpu_ms_plain']:.2f} ms plain vs {c['query_cpu_ms_with_evidence']:.2f} ms "
        "with evidence (both include the search: the µs above isolate what the evidence adds). "
        f"Machine load average (1/5/15 min) at the end: {d.get('load_average_at_end')}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
