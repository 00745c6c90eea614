"""Offline simulation of the plan bandit: LinUCB against uniform choice, the best fixed plan in hindsight
and the per-query oracle, on a dump of what every plan achieved on every query.

The dump (JSON lines, one per query) holds the query's features and, per plan (arm), the nDCG@10 it got,
its cost in ms and the reranked pairs it scored:

    {"qid": "q1", "features": [0.3, 1.2], "arms": {"bm25": {"ndcg": 0.61, "cost_ms": 1.2, "pairs": 0}, ...}}

(``features`` may also be an object of named features with the numeric list under ``vector``.)

Each round draws a query (with replacement, from the seed), the policy picks a plan from the features
(a constant 1 is appended, LinUCB has no intercept of its own), earns

    reward = ndcg − λ·cost_ms / 1000

and learns from it. λ (``--cost-weight``) is the nDCG@10 one CPU-second is worth. Its default, 0.05,
makes cost matter where it is large and leaves it negligible where it is small: on SciFact a
cross-encoder over 40 pairs costs ~1.4 s on 2 cores (0.07 reward) and pays only on queries where it
gains more than that, while hybrid's ~50 ms over BM25 costs 0.0025 and is worth it on almost any gain.

The policies see the same query sequence per seed. "best fixed" is the one plan with the highest total
reward on that sequence (known only in hindsight); "oracle" takes the best plan of every query.

    python -m benchmarks.bandit_sim --dump /work/ragbench/router_dump_test.jsonl [--rounds 3000] [--seeds 5]
    python -m benchmarks.bandit_sim --synthetic [--write-dump FILE]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from benchmarks._common import RESULTS, write_results
from rag.bandit.linucb import LinUCB

DEFAULT_COST_WEIGHT = 0.05  # nDCG@10 per CPU-second; see the module docstring
POLICIES = ("linucb", "uniform", "best fixed", "oracle")
METRICS = ("reward", "ndcg", "cost_ms", "pairs")

Array = npt.NDArray[np.float64]
Choices = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Dump:
    """A dump as arrays: row i is query ``qids[i]``, column j is plan ``arms[j]``."""

    qids: tuple[str, ...]
    arms: tuple[str, ...]
    features: Array  # queries × dim
    ndcg: Array  # queries × arms
    cost_ms: Array
    pairs: Array

    def rewards(self, cost_weight: float) -> Array:
        return reward_matrix(self.ndcg, self.cost_ms, cost_weight)


def reward_matrix(ndcg: Array, cost_ms: Array, cost_weight: float) -> Array:
    """ndcg − λ·cost_ms/1000, elementwise."""
    return ndcg - cost_weight * cost_ms / 1000.0


# --- the dump ------------------------------------------------------------------------------------


def parse_dump(rows: Iterable[dict[str, Any]]) -> Dump:
    """Validate dump rows: every query has the same plans and a feature vector of the same length."""
    qids: list[str] = []
    features: list[list[float]] = []
    table: dict[str, list[list[float]]] = {m: [] for m in ("ndcg", "cost_ms", "pairs")}
    arms: list[str] | None = None
    for n, row in enumerate(rows, start=1):
        qid = str(row.get("qid", f"line {n}"))
        row_arms = row.get("arms")
        if not isinstance(row_arms, dict) or not row_arms:
            raise ValueError(f"query {qid}: 'arms' must be a non-empty object of plan → results")
        if arms is None:
            arms = list(row_arms)
        elif set(row_arms) != set(arms):
            raise ValueError(f"query {qid}: plans {sorted(row_arms)} differ from the first query's {arms}")
        raw = row.get("features", [])
        if isinstance(raw, dict):  # named features (a router trace): the numeric vector is beside them
            raw = row.get("vector", [])
        vector = [float(v) for v in raw]
        if not vector or (features and len(vector) != len(features[0])):
            expected = len(features[0]) if features else "at least 1"
            raise ValueError(f"query {qid}: expected {expected} features, got {len(vector)}")
        for metric, values in table.items():
            try:
                values.append([float(row_arms[a][metric]) for a in arms])
            except (KeyError, TypeError) as exc:
                raise ValueError(f"query {qid}: each plan needs ndcg, cost_ms and pairs ({exc})") from None
        qids.append(qid)
        features.append(vector)
    if arms is None:
        raise ValueError("the dump holds no queries")
    arrays = {m: np.asarray(v, dtype=np.float64) for m, v in table.items()}
    x = np.asarray(features, dtype=np.float64)
    if not all(np.isfinite(a).all() for a in (x, *arrays.values())):
        raise ValueError("the dump holds non-finite numbers")
    return Dump(tuple(qids), tuple(arms), x, arrays["ndcg"], arrays["cost_ms"], arrays["pairs"])


def load_dump(path: Path) -> Dump:
    with path.open(encoding="utf-8") as fh:
        return parse_dump(json.loads(line) for line in fh if line.strip())


def synthetic_rows(n_queries: int = 300, seed: int = 0) -> list[dict[str, Any]]:
    """A plausible dump: four plans whose quality depends on the query in a way the features reveal.

    Features: lexical (share of rare query terms matched exactly), length (tokens / 20), gap (BM25's
    top-1 margin, its confidence) and agree (overlap of the BM25 and dense top 10). BM25 does well on
    lexical, confident queries; hybrid on the others; the cross-encoder gains most on hard queries
    (low gap, low agreement), more so at depth 50. Costs follow SciFact on 2 cores: BM25 ~1 ms, hybrid
    ~50 ms, ~33 ms per reranked pair. Per-query noise common to all plans (some queries are just hard)
    and a smaller per-plan noise keep it from being a clean linear problem."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_queries):
        lexical, gap, agree = rng.uniform(0, 1, size=3)
        length = min(rng.gamma(4.0, 3.0) / 20.0, 2.0)
        hardness = (1 - gap) * (1 - agree)
        base = rng.normal(0, 0.12)
        quality = {
            "bm25": 0.35 + 0.45 * lexical + 0.15 * gap,
            "hybrid": 0.55 + 0.15 * lexical + 0.10 * gap,
            "hybrid-rerank-20": 0.55 + 0.15 * lexical + 0.10 * gap + 0.22 * hardness,
            "hybrid-rerank-50": 0.55 + 0.15 * lexical + 0.10 * gap + 0.30 * hardness,
        }
        pairs = {"bm25": 0, "hybrid": 0, "hybrid-rerank-20": 20, "hybrid-rerank-50": 50}
        arms = {}
        for arm, q in quality.items():
            ndcg = float(np.clip(q + base + rng.normal(0, 0.04), 0.0, 1.0))
            fixed = 1.0 if arm == "bm25" else 50.0 * (1 + 0.3 * length)
            cost = (fixed + 33.0 * pairs[arm]) * float(rng.lognormal(0, 0.15))
            arms[arm] = {"ndcg": round(ndcg, 4), "cost_ms": round(cost, 2), "pairs": pairs[arm]}
        features = [round(float(v), 4) for v in (lexical, length, gap, agree)]
        rows.append({"qid": f"s{i}", "features": features, "arms": arms})
    return rows


# --- the policies --------------------------------------------------------------------------------


def with_bias(features: Array) -> Array:
    """Append a constant 1 column (the intercept LinUCB lacks)."""
    return np.hstack([features, np.ones((features.shape[0], 1))])


def run_linucb(
    dump: Dump,
    rewards: Array,
    order: Choices,
    rng: np.random.Generator,
    *,
    alpha: float,
    epsilon: float,
    reg: float,
) -> Choices:
    x = with_bias(dump.features)
    bandit = LinUCB(dump.arms, x.shape[1], alpha=alpha, epsilon=epsilon, reg=reg)
    index = {arm: j for j, arm in enumerate(dump.arms)}
    chosen = np.empty(len(order), dtype=np.int64)
    for t, q in enumerate(order):
        arm = bandit.choose(x[q], rng).arm
        chosen[t] = index[arm]
        bandit.update(arm, x[q], float(rewards[q, chosen[t]]))
    return chosen


def best_fixed(rewards: Array, order: Choices) -> Choices:
    """The single arm with the highest total reward on this sequence, every round."""
    arm = int(np.argmax(rewards[order].sum(axis=0)))
    return np.full(len(order), arm, dtype=np.int64)


def oracle(rewards: Array, order: Choices) -> Choices:
    return np.asarray(np.argmax(rewards[order], axis=1), dtype=np.int64)


# --- the simulation ------------------------------------------------------------------------------


def window_means(values: Array) -> dict[str, float]:
    """Mean over all rounds and over the last half."""
    return {"all": float(values.mean()), "last_half": float(values[len(values) // 2 :].mean())}


def spread(per_seed: Sequence[float]) -> dict[str, float]:
    a = np.asarray(per_seed, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def simulate(
    dump: Dump,
    *,
    rounds: int = 3000,
    seeds: int = 5,
    cost_weight: float = DEFAULT_COST_WEIGHT,
    alpha: float = 0.5,
    epsilon: float = 0.05,
    reg: float = 1.0,
) -> dict[str, Any]:
    """Run every policy for ``rounds`` rounds under ``seeds`` seeds; summary per policy and curves."""
    if rounds < 2 or seeds < 1:
        raise ValueError(f"need rounds >= 2 and seeds >= 1, got rounds={rounds}, seeds={seeds}")
    rewards = dump.rewards(cost_weight)
    columns = {"reward": rewards, "ndcg": dump.ndcg, "cost_ms": dump.cost_ms, "pairs": dump.pairs}
    per_seed: dict[str, dict[str, dict[str, list[float]]]] = {
        p: {m: {"all": [], "last_half": []} for m in METRICS} for p in POLICIES
    }
    curves: dict[str, list[Array]] = {p: [] for p in POLICIES}
    shares: dict[str, list[Array]] = {"all": [], "last_half": []}
    fixed_arms: list[str] = []
    steps = np.arange(1, rounds + 1)
    for seed in range(seeds):
        order = np.random.default_rng(seed).integers(len(dump.qids), size=rounds)
        chosen = {
            "linucb": run_linucb(
                dump,
                rewards,
                order,
                np.random.default_rng([seed, 1]),
                alpha=alpha,
                epsilon=epsilon,
                reg=reg,
            ),
            "uniform": np.random.default_rng([seed, 2]).integers(len(dump.arms), size=rounds),
            "best fixed": best_fixed(rewards, order),
            "oracle": oracle(rewards, order),
        }
        fixed_arms.append(dump.arms[int(chosen["best fixed"][0])])
        for policy, arms in chosen.items():
            for metric, table in columns.items():
                for window, value in window_means(table[order, arms]).items():
                    per_seed[policy][metric][window].append(value)
            curves[policy].append(np.cumsum(rewards[order, arms]) / steps)
        counts = np.bincount(chosen["linucb"], minlength=len(dump.arms))
        late = np.bincount(chosen["linucb"][rounds // 2 :], minlength=len(dump.arms))
        shares["all"].append(counts / rounds)
        shares["last_half"].append(late / late.sum())
    return {
        "params": {
            "rounds": rounds,
            "seeds": seeds,
            "cost_weight": cost_weight,
            "alpha": alpha,
            "epsilon": epsilon,
            "reg": reg,
            "queries": len(dump.qids),
            "arms": list(dump.arms),
            "features": int(dump.features.shape[1]),
        },
        "policies": {
            p: {m: {w: spread(v) for w, v in windows.items()} for m, windows in metrics.items()}
            for p, metrics in per_seed.items()
        },
        "linucb_arm_share": {
            w: dict(zip(dump.arms, np.mean(s, axis=0).round(4).tolist(), strict=True))
            for w, s in shares.items()
        },
        "best_fixed_arm_per_seed": fixed_arms,
        "curves": {p: np.mean(c, axis=0) for p, c in curves.items()},
        "curves_min": {p: np.min(c, axis=0) for p, c in curves.items()},
        "curves_max": {p: np.max(c, axis=0) for p, c in curves.items()},
    }


# --- the report ----------------------------------------------------------------------------------


def plot(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for policy in POLICIES:
        mean = result["curves"][policy]
        steps = np.arange(1, len(mean) + 1)
        (line,) = ax.plot(steps, mean, label=policy)
        ax.fill_between(
            steps,
            result["curves_min"][policy],
            result["curves_max"][policy],
            color=line.get_color(),
            alpha=0.15,
        )
    skip = max(len(steps) // 50, 1)  # the first rounds' running means swing too widely to read
    low = min(float(np.min(result["curves_min"][p][skip:])) for p in POLICIES)
    high = max(float(np.max(result["curves_max"][p][skip:])) for p in POLICIES)
    ax.set_ylim(low - 0.02, high + 0.02)
    ax.set_xlabel("round")
    ax.set_ylabel("running mean reward (nDCG@10 − λ·CPU-s)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def fmt(s: dict[str, float], digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def markdown(result: dict[str, Any], source: str, command: str) -> str:
    p = result["params"]
    lines = [
        "# Plan bandit: offline simulation",
        "",
        f"Dump: {source} ({p['queries']} queries, {p['features']} features + bias, plans {p['arms']}).",
        f"Command: `{command}`",
        "",
        f"{p['rounds']} rounds × {p['seeds']} seeds, reward = nDCG@10 − λ·cost_ms/1000 with "
        f"λ = {p['cost_weight']}; LinUCB alpha = {p['alpha']}, ε = {p['epsilon']}, reg = {p['reg']}. "
        "Mean ± std across seeds.",
        "",
        "| policy | reward, last half | reward, all | nDCG@10, last half | cost ms, last half "
        "| pairs, last half |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for policy in POLICIES:
        m = result["policies"][policy]
        lines.append(
            f"| {policy} | {fmt(m['reward']['last_half'])} | {fmt(m['reward']['all'])} | "
            f"{fmt(m['ndcg']['last_half'])} | {fmt(m['cost_ms']['last_half'], 1)} | "
            f"{fmt(m['pairs']['last_half'], 1)} |"
        )
    share = ", ".join(f"{a} {v:.0%}" for a, v in result["linucb_arm_share"]["last_half"].items())
    fixed = sorted(set(result["best_fixed_arm_per_seed"]))
    lines += [
        "",
        f"LinUCB's plan shares over the last half: {share}. "
        f"Best fixed plan in hindsight: {', '.join(fixed)}.",
        "",
        "![running mean reward](bandit.png)",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--dump", type=Path, help="JSON-lines dump of per-plan results per query")
    source.add_argument("--synthetic", action="store_true", help="simulate on a generated dump")
    parser.add_argument("--synthetic-queries", type=int, default=300)
    parser.add_argument("--write-dump", type=Path, help="with --synthetic: also save the generated dump")
    parser.add_argument("--rounds", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cost-weight", type=float, default=DEFAULT_COST_WEIGHT, help="λ, nDCG per CPU-s")
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--epsilon", type=float, default=0.05)
    parser.add_argument("--reg", type=float, default=1.0)
    args = parser.parse_args()

    if args.synthetic:
        rows = synthetic_rows(args.synthetic_queries)
        if args.write_dump:
            args.write_dump.write_text("".join(json.dumps(r) + "\n" for r in rows))
        dump, source_name = parse_dump(rows), "synthetic (generator seed 0)"
    else:
        dump, source_name = load_dump(args.dump), f"`{args.dump.name}`"
    result = simulate(
        dump,
        rounds=args.rounds,
        seeds=args.seeds,
        cost_weight=args.cost_weight,
        alpha=args.alpha,
        epsilon=args.epsilon,
        reg=args.reg,
    )
    flags = "--synthetic" if args.synthetic else f"--dump {args.dump}"
    command = (
        f"python -m benchmarks.bandit_sim {flags} --rounds {args.rounds} --seeds {args.seeds} "
        f"--cost-weight {args.cost_weight} --alpha {args.alpha} --epsilon {args.epsilon}"
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot(result, RESULTS / "bandit.png", f"Plan bandit on {source_name.strip('`')}, λ = {args.cost_weight}")
    data = {k: v for k, v in result.items() if not k.startswith("curves")}
    stride = max(args.rounds // 200, 1)
    data["curves"] = {
        "round": list(range(1, args.rounds + 1, stride)),
        **{p: [round(float(v), 5) for v in c[::stride]] for p, c in result["curves"].items()},
    }
    data["source"] = source_name
    write_results("bandit", data, markdown(result, source_name, command))


if __name__ == "__main__":
    main()
