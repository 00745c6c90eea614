"""`rag eval` through the CLI contract, on a tiny BEIR folder with the hash embedder."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from rag.offline.metrics import evaluate_queries, evaluate_run, ranked_run

CONTRACT_KEYS = {
    "dataset",
    "pipeline",
    "queries",
    "ndcg@10",
    "recall@100",
    "mrr@10",
    "latency_ms",
    "rerank_pairs",
}


def run_cli(args: list[str], env_extra: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | env_extra
    return subprocess.run(
        [sys.executable, "-m", "rag", *args], env=env, capture_output=True, text=True, timeout=300
    )


@pytest.mark.parametrize("pipeline", ["bm25", "dense", "hybrid"])
def test_eval_cli_writes_contract_json(animals_beir: Path, tmp_path: Path, pipeline: str) -> None:
    out = tmp_path / "result.json"
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_EMBEDDER_MODEL": "hash:64"}
    proc = run_cli(
        ["eval", "--data", str(animals_beir), "--pipeline", pipeline, "--json", str(out), "--quiet"], env
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert set(result) >= CONTRACT_KEYS
    assert result["pipeline"] == pipeline and result["queries"] == 4 and result["dataset"] == "animals"
    assert set(result["latency_ms"]) >= {"p50", "p95"}
    assert result["rerank_pairs"] == 0
    assert 0.3 < result["ndcg@10"] <= 1.0
    per_query = result["per_query"]  # what `rag eval --compare` pairs: every query, its mean the aggregate
    assert len(per_query) == 4
    for key in ("ndcg@10", "recall@100", "mrr@10"):
        assert sum(m[key] for m in per_query.values()) / 4 == pytest.approx(result[key], abs=1e-12)


def test_hybrid_rerank_without_reranker_reports_degraded(animals_beir: Path, tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_EMBEDDER_MODEL": "hash:64"}
    proc = run_cli(["eval", "--data", str(animals_beir), "--pipeline", "hybrid-rerank", "--quiet"], env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["rerank_pairs"] == 0
    assert result["degraded"] == {"rerank: no reranker configured (RAG_RERANKER_MODEL)": 4}


def test_eval_cli_rejects_non_beir_folder(tmp_path: Path) -> None:
    proc = run_cli(
        ["eval", "--data", str(tmp_path)],
        {"RAG_DATA_DIR": str(tmp_path / "d"), "RAG_EMBEDDER_MODEL": "hash:8"},
    )
    assert proc.returncode == 2
    assert "is not a BEIR folder: missing corpus.jsonl" in proc.stderr


def test_eval_cli_rejects_unknown_pipeline(tmp_path: Path) -> None:
    proc = run_cli(["eval", "--data", str(tmp_path), "--pipeline", "magic"], {})
    assert proc.returncode == 2 and "invalid choice: 'magic'" in proc.stderr


def test_identical_ids_are_ignored() -> None:
    run = ranked_run({"salmon": ["salmon", "whale", "cat"]})
    assert list(run["salmon"]) == ["whale", "cat"]
    metrics = evaluate_run({"salmon": {"salmon": 1, "whale": 1}}, run)
    assert metrics["mrr@10"] == 1.0


def test_metrics_match_hand_computed_values() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}, "q3": {"z": 1}}
    run = ranked_run({"q1": ["x", "a"], "q2": ["b", "c"]}, ignore_identical_ids=False)  # q3: no results
    metrics = evaluate_run(qrels, run)
    assert metrics["mrr@10"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert metrics["recall@100"] == pytest.approx((1 + 1 + 0) / 3)
    assert metrics["ndcg@10"] == pytest.approx((1 / 1.5849625 + 1.0 + 0.0) / 3, rel=1e-5)


def test_per_query_metrics_leave_the_means_unchanged_and_score_a_query_without_results_0() -> None:
    qrels = {"q1": {"a": 1}, "q2": {"b": 2, "c": 1}, "q3": {"z": 1}}
    run = ranked_run({"q1": ["x", "a"], "q2": ["b", "c"]}, ignore_identical_ids=False)
    means, per_query = evaluate_queries(qrels, run)
    assert means == evaluate_run(qrels, run)  # bit for bit
    assert per_query["q3"] == {"ndcg@10": 0.0, "recall@100": 0.0, "mrr@10": 0.0}
    assert per_query["q1"]["mrr@10"] == 0.5 and per_query["q2"]["ndcg@10"] == pytest.approx(1.0)


def test_eval_compare_cli_prints_the_paired_difference(animals_beir: Path, tmp_path: Path) -> None:
    env = {"RAG_DATA_DIR": str(tmp_path / "data"), "RAG_EMBEDDER_MODEL": "hash:64"}
    outs = {}
    for pipeline in ("bm25", "hybrid"):
        outs[pipeline] = tmp_path / f"{pipeline}.json"
        args = ["eval", "--data", str(animals_beir), "--pipeline", pipeline, "--json", str(outs[pipeline])]
        assert run_cli([*args, "--quiet"], env).returncode == 0
    report_file = tmp_path / "compare.json"
    proc = run_cli(
        ["eval", "--compare", str(outs["bm25"]), str(outs["bm25"]), "--json", str(report_file)], env
    )
    assert proc.returncode == 0, proc.stderr
    assert "ndcg@10" in proc.stdout and "0/4/0" in proc.stdout  # a run against itself: 4 ties
    same = json.loads(report_file.read_text())["metrics"][0]
    assert (same["difference"], same["ci_low"], same["ci_high"]) == (0.0, 0.0, 0.0)
    proc = run_cli(["eval", "--compare", str(outs["bm25"]), str(outs["hybrid"])], env)
    assert proc.returncode == 0, proc.stderr
    assert "B − A, paired by query" in proc.stdout and "recall@100" in proc.stdout
