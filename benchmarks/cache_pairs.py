"""Semantic-cache threshold table: hit rate and false-hit rate, with 95% Wilson intervals, per threshold.

The labelled pairs (``benchmarks/data/cache_pairs.jsonl``) hold paraphrases that should hit and
near-misses (negation, numbers, dates, names, opposite words, other topics) that must not. A pair hits
when the cosine similarity of the two query embeddings reaches the threshold *and* the lexical guard
(``rag.cache.guard``) accepts it, exactly as the service decides. Term statistics for the guard come from
the corpus each domain's queries would run against: the bundled demo corpus (python) and SciFact
(science, from ``--scifact``; without it the guard runs without IDF for those pairs).

    python -m benchmarks.cache_pairs [--scifact ../shared/data/scifact]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from benchmarks._common import write_results
from rag.cache.guard import check
from rag.config import load_settings
from rag.runtime import build_embedder
from rag.text.analyzer import Analyzer

PAIRS = Path(__file__).resolve().parent / "data" / "cache_pairs.jsonl"
DEMO = Path(__file__).resolve().parents[1] / "data" / "demo" / "corpus.jsonl"
THRESHOLDS = (0.70, 0.75, 0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96)


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion."""
    if n == 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(centre - half, 0.0), min(centre + half, 1.0))


def idf_table(corpus: Path, analyzer: Analyzer) -> Callable[[str], float | None]:
    df: Counter[str] = Counter()
    n = 0
    with corpus.open() as f:
        for line in f:
            doc = json.loads(line)
            df.update(set(analyzer.tokens(f"{doc.get('title', '')} {doc.get('text', '')}")))
            n += 1

    def idf(term: str) -> float | None:
        d = df.get(term)
        return None if d is None else math.log1p((n - d + 0.5) / (d + 0.5))

    return idf


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scifact", type=Path, default=Path("../shared/data/scifact"))
    parser.add_argument("--rare-idf", type=float, default=load_settings().cache_rare_idf)
    args = parser.parse_args()
    pairs = [json.loads(line) for line in PAIRS.read_text().splitlines() if line.strip()]
    analyzer = Analyzer()
    idf = {"python": idf_table(DEMO, analyzer)}
    science_corpus = args.scifact / "corpus.jsonl"
    idf["science"] = idf_table(science_corpus, analyzer) if science_corpus.exists() else (lambda t: None)
    embedder = build_embedder(load_settings())
    a = embedder.embed([p["a"] for p in pairs])
    b = embedder.embed([p["b"] for p in pairs])
    sims = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    guard_ok = np.array(
        [check(p["a"], p["b"], analyzer, idf[p["domain"]], rare_idf=args.rare_idf).compatible for p in pairs]
    )
    should = np.array([p["label"] == "hit" for p in pairs])
    rows = []
    for t in THRESHOLDS:
        for guarded in (True, False):
            served = (sims >= t) & (guard_ok if guarded else True)
            hits, n_hit = int((served & should).sum()), int(should.sum())
            false, n_miss = int((served & ~should).sum()), int((~should).sum())
            kinds = Counter(p["kind"] for p, s in zip(pairs, served & ~should, strict=True) if s)
            rows.append(
                {
                    "threshold": t,
                    "guard": guarded,
                    "hit_rate": hits / n_hit,
                    "hit_ci95": wilson(hits, n_hit),
                    "false_hit_rate": false / n_miss,
                    "false_hit_ci95": wilson(false, n_miss),
                    "false_hits_by_kind": dict(kinds),
                }
            )
    lines = [
        "# Semantic cache: hit and false-hit rates per threshold",
        "",
        f"{len(pairs)} labelled pairs ({int(should.sum())} should hit, {int((~should).sum())} must not); "
        f"embedder `{embedder.name}`; guard `rare_idf={args.rare_idf}`. 95% Wilson intervals.",
        "",
        "| threshold | guard | hit rate (95% CI) | false-hit rate (95% CI) | false hits by kind |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lo, hi = r["hit_ci95"]
        flo, fhi = r["false_hit_ci95"]
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r["false_hits_by_kind"].items())) or "-"
        lines.append(
            f"| {r['threshold']:.2f} | {'on' if r['guard'] else 'off'} | {r['hit_rate']:.1%} "
            f"({lo:.1%}–{hi:.1%}) | {r['false_hit_rate']:.1%} ({flo:.1%}–{fhi:.1%}) | {kinds} |"
        )
    lines.append("")
    lines.append("Reproduce: `python -m benchmarks.cache_pairs --scifact ../shared/data/scifact`")
    write_results(
        "cache_pairs",
        {"pairs": len(pairs), "embedder": embedder.name, "rare_idf": args.rare_idf, "rows": rows},
        "\n".join(lines) + "\n",
    )


if __name__ == "__main__":
    main()
