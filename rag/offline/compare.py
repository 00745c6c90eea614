"""`rag eval --compare A.json B.json`: is B better than A on the same queries, and by how much?

Two ``rag eval --json`` results hold a per-query metric (``per_query``). The comparison is **paired**: the
difference B − A is taken query by query, on the queries both results hold, and its mean is the effect.
Its uncertainty is a percentile **bootstrap** over queries (resample the per-query differences with
replacement, ``resamples`` times, seeded): the interval says how far the mean difference moves when a
different sample of queries of the same kind had been drawn. Pairing matters: the spread of nDCG@10
between queries (≈ 0.3 on SciFact) is far larger than the spread of one query's difference between two
pipelines, and an unpaired interval would drown the latter in the former.

A paired sign-flip (randomisation) test gives a two-sided p-value for "no difference" from the same
differences. Wins, ties and losses count queries where B is above, equal to (within ``TIE_EPS``) or below A.

Everything here is a small pure function over arrays; :func:`compare_results` reads two result dicts.
Invariants: identical runs give a mean of 0 and the interval [0, 0]; the same seed gives the same
interval; nothing depends on the order the queries are listed in (they are sorted first).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 17
TIE_EPS = (
    1e-9  # per-query metrics equal to this are a tie (trec_eval prints 4+ decimals; floats differ below)
)
_CHUNK = 1_000_000  # resampled values drawn at a time: bounds memory at ~8 MB whatever the query count
METRICS = ("ndcg@10", "recall@100", "mrr@10")


def paired(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[list[str], NDArray[np.float64]]:
    """The queries both maps hold (sorted) and the per-query differences ``b - a`` over them."""
    common = sorted(set(a) & set(b))
    return common, np.array([b[q] - a[q] for q in common], dtype=np.float64)


def bootstrap_means(
    diffs: Sequence[float] | NDArray[np.float64], *, resamples: int, seed: int
) -> NDArray[np.float64]:
    """The mean of ``resamples`` bootstrap samples of ``diffs`` (each: len(diffs) draws with replacement)."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("need at least one paired query to bootstrap")
    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // d.size)
    means = np.empty(resamples, dtype=np.float64)
    for start in range(0, resamples, rows):
        n = min(rows, resamples - start)
        means[start : start + n] = d[rng.integers(0, d.size, size=(n, d.size))].mean(axis=1)
    return means


def bootstrap_ci(
    diffs: Sequence[float] | NDArray[np.float64],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` at ``confidence`` (two-sided)."""
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    means = bootstrap_means(diffs, resamples=resamples, seed=seed)
    tail = (1.0 - confidence) / 2.0 * 100.0
    lo, hi = np.percentile(means, [tail, 100.0 - tail])
    return float(lo), float(hi)


def sign_flip_p(
    diffs: Sequence[float] | NDArray[np.float64], *, resamples: int = RESAMPLES, seed: int = SEED
) -> float:
    """Two-sided p-value of a paired randomisation test: under "A and B are exchangeable" each query's
    difference is as likely negated; p = share of random sign flips whose |mean| reaches the observed one
    (with the +1 correction, so never 0). All-zero differences give 1.0."""
    d = np.asarray(diffs, dtype=np.float64)
    if d.size == 0:
        raise ValueError("need at least one paired query")
    observed = abs(float(d.mean()))
    if observed <= TIE_EPS:
        return 1.0
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK // d.size)
    hits = 0
    for start in range(0, resamples, rows):
        n = min(rows, resamples - start)
        signs = rng.integers(0, 2, size=(n, d.size)) * 2 - 1
        hits += int(np.count_nonzero(np.abs((signs * d).mean(axis=1)) >= observed - TIE_EPS))
    return (hits + 1) / (resamples + 1)


def wins_ties_losses(
    diffs: Sequence[float] | NDArray[np.float64], *, eps: float = TIE_EPS
) -> tuple[int, int, int]:
    """Queries where B is above A, equal within ``eps``, below."""
    d = np.asarray(diffs, dtype=np.float64)
    return int(np.sum(d > eps)), int(np.sum(np.abs(d) <= eps)), int(np.sum(d < -eps))


@dataclass(frozen=True, slots=True)
class MetricComparison:
    metric: str
    queries: int
    mean_a: float
    mean_b: float
    difference: float  # mean of b - a over the paired queries
    ci_low: float
    ci_high: float
    p_value: float
    wins: int
    ties: int
    losses: int

    @property
    def significant(self) -> bool:
        """Whether the interval excludes 0."""
        return self.ci_low > 0.0 or self.ci_high < 0.0


def compare_metric(
    metric: str,
    a: Mapping[str, float],
    b: Mapping[str, float],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> MetricComparison:
    """The paired comparison of one per-query metric on the queries both hold."""
    common, diffs = paired(a, b)
    if not common:
        raise ValueError(f"no query has {metric} in both results")
    lo, hi = bootstrap_ci(diffs, resamples=resamples, confidence=confidence, seed=seed)
    wins, ties, losses = wins_ties_losses(diffs)
    return MetricComparison(
        metric=metric,
        queries=len(common),
        mean_a=float(np.mean([a[q] for q in common])),
        mean_b=float(np.mean([b[q] for q in common])),
        difference=float(diffs.mean()),
        ci_low=lo,
        ci_high=hi,
        p_value=sign_flip_p(diffs, resamples=resamples, seed=seed),
        wins=wins,
        ties=ties,
        losses=losses,
    )


def _per_query(result: Mapping[str, Any], name: str) -> dict[str, dict[str, float]]:
    per_query = result.get("per_query")
    if not isinstance(per_query, dict) or not per_query:
        raise ValueError(
            f"{name} has no per-query metrics ('per_query'): write it with this version of `rag eval --json`"
        )
    return {str(q): {str(k): float(v) for k, v in m.items()} for q, m in per_query.items()}


def compare_results(
    a: Mapping[str, Any],
    b: Mapping[str, Any],
    *,
    names: tuple[str, str] = ("A", "B"),
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> dict[str, Any]:
    """B − A for each metric both results hold per query (:data:`METRICS` order), with notes on what
    differs between the two runs (dataset, split, query sets)."""
    pa, pb = _per_query(a, names[0]), _per_query(b, names[1])
    notes: list[str] = []
    for key in ("dataset", "split"):
        if a.get(key) != b.get(key):
            notes.append(f"{key} differs: {a.get(key)!r} vs {b.get(key)!r}")
    only_a, only_b = sorted(set(pa) - set(pb)), sorted(set(pb) - set(pa))
    if only_a or only_b:
        notes.append(
            f"query sets differ: {len(only_a)} only in {names[0]}, {len(only_b)} only in {names[1]}; "
            f"compared on the {len(set(pa) & set(pb))} both hold"
        )
    present = [m for m in METRICS if any(m in v for v in pa.values()) and any(m in v for v in pb.values())]
    rows = []
    for metric in present:
        ma = {q: v[metric] for q, v in pa.items() if metric in v}
        mb = {q: v[metric] for q, v in pb.items() if metric in v}
        rows.append(compare_metric(metric, ma, mb, resamples=resamples, confidence=confidence, seed=seed))
    return {
        "a": {"name": names[0], "pipeline": a.get("pipeline"), "dataset": a.get("dataset")},
        "b": {"name": names[1], "pipeline": b.get("pipeline"), "dataset": b.get("dataset")},
        "bootstrap": {"resamples": resamples, "confidence": confidence, "seed": seed, "paired": True},
        "metrics": [{**asdict(r), "significant": r.significant} for r in rows],
        "notes": notes,
    }


def render(report: Mapping[str, Any]) -> str:
    """The comparison as a few lines of text."""
    a, b, boot = report["a"], report["b"], report["bootstrap"]
    level = round(boot["confidence"] * 100)
    lines = [
        f"B − A, paired by query: A = {a['name']} ({a['pipeline']}), B = {b['name']} ({b['pipeline']})",
        f"{'metric':<11} {'queries':>7} {'A':>7} {'B':>7} {'B−A':>8}  {level}% CI (bootstrap)    "
        f"{'p':>6}  wins/ties/losses",
    ]
    for m in report["metrics"]:
        ci = f"[{m['ci_low']:+.4f}, {m['ci_high']:+.4f}]"
        lines.append(
            f"{m['metric']:<11} {m['queries']:>7} {m['mean_a']:>7.4f} {m['mean_b']:>7.4f} "
            f"{m['difference']:>+8.4f}  {ci:<21}{'*' if m['significant'] else ' '} {m['p_value']:>6.4f}  "
            f"{m['wins']}/{m['ties']}/{m['losses']}"
        )
    lines.append(
        f"({boot['resamples']} resamples of the queries, seed {boot['seed']}; * = interval excludes 0)"
    )
    lines += [f"note: {n}" for n in report["notes"]]
    return "\n".join(lines)
