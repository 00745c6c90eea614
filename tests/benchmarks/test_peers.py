"""The peers benchmark's shared parts, without the peers' venv: nDCG@10 as trec_eval computes it (checked
against pytrec_eval through rag's metrics), reciprocal rank fusion against a naive loop, the quick run's
corpus subset, the BEIR folder it writes, the query driver and the results table."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest

from benchmarks.peers import (
    dedupe,
    documents,
    drive,
    mean_ndcg,
    ndcg_at_k,
    prepare,
    render_markdown,
    rrf,
    subset_ids,
)
from rag.io.sources import read_beir_jsonl, read_qrels
from rag.offline.metrics import evaluate_run, ranked_run


def random_case(seed: int) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(40)]
    qrels = {
        f"q{q}": {d: rng.choice([1, 1, 2]) for d in rng.sample(docs, rng.randint(1, 6))} for q in range(30)
    }
    ranked = {q: rng.sample(docs, rng.randint(0, 15)) for q in qrels if rng.random() > 0.1}
    return qrels, ranked


@pytest.mark.parametrize("seed", range(5))
def test_ndcg_matches_pytrec_eval(seed: int) -> None:
    qrels, ranked = random_case(seed)
    reference = evaluate_run(qrels, ranked_run(ranked))["ndcg@10"]
    assert mean_ndcg(qrels, ranked) == pytest.approx(reference, abs=1e-9)


def test_ndcg_edge_cases() -> None:
    assert ndcg_at_k(["a", "b"], {"a": 1}) == 1.0
    assert ndcg_at_k([], {"a": 1}) == 0.0
    assert ndcg_at_k(["x"], {"a": 0}) == 0.0  # nothing relevant: 0, not a division by zero
    assert ndcg_at_k(["a", "a", "b"], {"a": 1, "b": 1}) == 1.0  # a repeated id counts once
    # the document whose id is the query's is dropped (BEIR), so b moves to rank 1
    assert mean_ndcg({"q": {"b": 1}}, {"q": ["q", "b"]}) == 1.0
    assert mean_ndcg({"q": {"b": 1}, "r": {"b": 1}}, {"q": ["b"]}) == 0.5  # r has no results: 0


def naive_rrf(rankings: list[list[str]], k: int) -> dict[str, float]:
    scores: dict[str, float] = {}
    for ranking in rankings:
        for i in range(len(ranking)):
            if ranking[i] not in ranking[:i]:
                scores[ranking[i]] = scores.get(ranking[i], 0.0) + 1 / (k + i + 1)
    return scores


@pytest.mark.parametrize("seed", range(5))
def test_rrf_matches_a_naive_loop(seed: int) -> None:
    rng = random.Random(seed)
    docs = [f"d{i}" for i in range(30)]
    rankings = [rng.sample(docs, rng.randint(0, 20)) for _ in range(rng.randint(1, 3))]
    fused = rrf(rankings, k=60, top_k=10)
    scores = naive_rrf(rankings, 60)
    assert [scores[d] for d in fused] == sorted(scores.values(), reverse=True)[: len(fused)]
    assert len(fused) == min(10, len(scores))


def test_rrf_ties_go_to_the_first_seen() -> None:
    assert rrf([["a", "b"], ["b", "a"]], top_k=2) == ["a", "b"]
    assert rrf([["b", "a"], ["a", "b"]], top_k=2) == ["b", "a"]
    assert rrf([["a"], ["b", "c"]], k=1, top_k=3) == ["a", "b", "c"]
    assert dedupe(["a", "b", "a", "c", "b"]) == ["a", "b", "c"]


def test_subset_keeps_the_judged_documents_and_corpus_order() -> None:
    corpus = [f"d{i}" for i in range(100)]
    qrels = {"q1": {"d90": 1, "d5": 1}, "q2": {"d50": 1}}
    kept = subset_ids(corpus, qrels, ["q1"], 10)
    assert len(kept) == 10 and {"d90", "d5"} <= set(kept)
    assert kept == sorted(kept, key=corpus.index)
    assert subset_ids(corpus, qrels, ["q1"], 10) == kept  # seeded
    assert subset_ids(corpus, qrels, ["q1"], None) == corpus
    assert subset_ids(corpus, qrels, ["q1", "q2"], 1) == ["d5", "d50", "d90"]  # judged ones always stay


def write_beir(folder: Path) -> None:
    (folder / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": f"T{i}", "text": f"text {i}"} for i in range(50)]
    (folder / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    queries = [{"_id": f"q{i}", "text": f"query {i}"} for i in range(5)]
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    rows = [f"q{i}\td{i * 7}\t1" for i in range(5)] + ["q9\td1\t1"]  # q9 has no query text
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "\n".join(rows) + "\n")


def test_prepare_writes_a_beir_folder_rag_reads(tmp_path: Path) -> None:
    write_beir(tmp_path / "src")
    run = prepare(tmp_path / "src", 3, 8, tmp_path / "out")
    assert run["qids"] == ["q0", "q1", "q2"] and run["documents"] == 8
    docs = list(read_beir_jsonl(tmp_path / "out" / "corpus.jsonl"))
    assert {"d0", "d7", "d14"} <= {d.doc_id for d in docs} and len(docs) == 8
    assert read_qrels(tmp_path / "out" / "qrels" / "test.tsv") == {
        "q0": {"d0": 1},
        "q1": {"d7": 1},
        "q2": {"d14": 1},
    }
    assert documents(tmp_path / "out")[0] == ("d0", "T0 text 0")


def test_drive_keeps_input_order_under_threads() -> None:
    seen: set[int] = set()

    def search(text: str) -> list[str]:
        seen.add(threading.get_ident())
        return [text, text + "!"]

    texts = [f"t{i}" for i in range(40)]
    one, stats1 = drive(search, texts, 1)
    many, stats8 = drive(search, texts, 8)
    assert one == many == [[t, t + "!"] for t in texts]
    assert stats1["qps"] > 0 and stats8["cpu_ms_per_query"] >= 0
    assert len(seen) > 1


def row(system: str, qps: float, ndcg: float) -> dict[str, object]:
    timing = {"qps": qps, "cpu_ms_per_query": 1000 / qps, "wall_s": 1.0, "cpu_s": 1.0}
    return {
        "system": system,
        "ndcg@10": ndcg,
        "sequential": timing,
        "concurrent": timing,
        "build_s": 2.0,
        "peak_rss_mib": 500.0,
        "same_top10_concurrent": 20,
        "queries": 20,
    }


def test_table_has_a_row_per_system_and_the_speed_ratio() -> None:
    meta = {
        "label": "smoke",
        "load": "loaded",
        "queries": 20,
        "documents": 500,
        "candidates": 100,
        "concurrency": 8,
        "warmup": "every query once, untimed,",
        "command": "python -m benchmarks.peers --limit 20",
        "machine": {"cpu_count": 2},
    }
    rows = [row("haystack", 4.0, 0.70), row("handwired", 10.0, 0.71), row("rag", 50.0, 0.72)]
    rows.append({"system": "llamaindex", "error": "ImportError: no module"})
    md = render_markdown(rows, meta)
    assert md.count("\n| ") == 1 + 4  # header + one row per system
    assert "| llamaindex | failed: ImportError: no module |" in md
    assert "rag: **5.0x** the one-by-one queries/s of the fastest peer (handwired)" in md
    assert "nDCG@10 +0.0100" in md
    assert "| rag | 0.7200 | 50.0 | 50.0 | 20.0 |" in md


@pytest.mark.parametrize("module", ["peers", "peer_systems"])
def test_the_benchmark_imports_only_the_standard_library_at_the_top(module: str) -> None:
    """Both venvs run these modules: the peers' has no ``rag``, the service's has no peers, so every
    library import sits inside the system that needs it."""
    import ast
    import sys

    tree = ast.parse((Path(__file__).parents[2] / "benchmarks" / f"{module}.py").read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = [a.name for n in top if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in top if isinstance(n, ast.ImportFrom)]
    outside = [n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"__future__"}]
    assert outside == ([] if module == "peers" else ["benchmarks.peers"])
