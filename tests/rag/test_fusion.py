"""Fusion functions against a naive loop written from the formulas."""

import random

import pytest

from rag.fusion import FusionMethod, fuse, minmax_fusion, minmax_normalise, weighted_rrf
from rag.types import Hit


def random_lists(rng: random.Random) -> dict[str, list[Hit]]:
    pool = [f"d{i}" for i in range(30)]
    lists = {}
    for name in ("bm25", "dense", "extra")[: rng.randint(1, 3)]:
        docs = rng.sample(pool, rng.randint(0, 20))
        scores = sorted((rng.uniform(-5, 20) for _ in docs), reverse=True)
        lists[name] = [Hit(d, s, f"{d}#0") for d, s in zip(docs, scores, strict=True)]
    return lists


def naive_rrf(lists: dict[str, list[Hit]], weights: dict[str, float], k: int) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, hits in lists.items():
        for i in range(len(hits)):
            d = hits[i].doc_id
            out[d] = out.get(d, 0.0) + weights[name] * (1.0 / (k + i + 1))
    return out


def naive_minmax(lists: dict[str, list[Hit]], weights: dict[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for name, hits in lists.items():
        if not hits:
            continue
        lo = min(h.score for h in hits)
        hi = max(h.score for h in hits)
        for h in hits:
            norm = 1.0 if hi == lo else (h.score - lo) / (hi - lo)
            out[h.doc_id] = out.get(h.doc_id, 0.0) + weights[name] * norm
    return out


@pytest.mark.parametrize("seed", range(200))
def test_weighted_rrf_matches_naive_loop(seed: int) -> None:
    rng = random.Random(seed)
    lists = random_lists(rng)
    weights = {name: rng.choice([0.0, 0.5, 1.0, 2.5]) for name in lists}
    k = rng.choice([1, 10, 60])
    fused = weighted_rrf(lists, weights, k=k)
    expected = naive_rrf(lists, weights, k)
    assert {h.doc_id: h.score for h in fused} == pytest.approx(expected)
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)


@pytest.mark.parametrize("seed", range(200))
def test_minmax_fusion_matches_naive_loop(seed: int) -> None:
    rng = random.Random(seed)
    lists = random_lists(rng)
    weights = {name: rng.uniform(0, 2) for name in lists}
    fused = minmax_fusion(lists, weights)
    assert {h.doc_id: h.score for h in fused} == pytest.approx(naive_minmax(lists, weights))
    assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)


def test_rrf_ties_keep_first_seen_order_and_best_chunk() -> None:
    lists = {"a": [Hit("x", 9, "x#1"), Hit("y", 8, "y#0")], "b": [Hit("y", 1, "y#2"), Hit("x", 0.5, "x#0")]}
    fused = weighted_rrf(lists, {"a": 1, "b": 1})
    assert [h.doc_id for h in fused] == ["x", "y"]
    assert [h.chunk_id for h in fused] == ["x#1", "y#0"]


def test_weight_changes_winner() -> None:
    lists = {
        "bm25": [Hit("a", 1, "a#0"), Hit("b", 0, "b#0")],
        "dense": [Hit("b", 1, "b#0"), Hit("a", 0, "a#0")],
    }
    assert weighted_rrf(lists, {"bm25": 1, "dense": 3})[0].doc_id == "b"
    assert weighted_rrf(lists, {"bm25": 3, "dense": 1})[0].doc_id == "a"


def test_errors_name_the_problem() -> None:
    lists = {"bm25": [Hit("a", 1, "a#0")]}
    with pytest.raises(ValueError, match="no fusion weight for retriever"):
        weighted_rrf(lists, {})
    with pytest.raises(ValueError, match="must be >= 0"):
        weighted_rrf(lists, {"bm25": -1})
    with pytest.raises(ValueError, match="at least 1"):
        weighted_rrf(lists, {"bm25": 1}, k=0)
    with pytest.raises(ValueError, match=r"fusion must be one of \['rrf', 'minmax', 'dbsf'\]"):
        FusionMethod.from_str("sum")


def test_minmax_normalise_constant_list_is_all_ones() -> None:
    assert minmax_normalise([3.0, 3.0]) == [1.0, 1.0]
    assert minmax_normalise([]) == []


def test_fuse_dispatches() -> None:
    lists = {"bm25": [Hit("a", 5, "a#0"), Hit("b", 1, "b#0")]}
    assert fuse(FusionMethod.MINMAX, lists, {"bm25": 1})[1].score == 0.0
    assert fuse(FusionMethod.RRF, lists, {"bm25": 1}, rrf_k=1)[0].score == pytest.approx(0.5)


def test_dbsf_normalise_maps_three_sd_around_the_mean() -> None:
    from rag.fusion import dbsf_normalise

    values = [1.0, 2.0, 3.0]  # mean 2, sd sqrt(2/3)
    sd = (2 / 3) ** 0.5
    assert dbsf_normalise(values) == pytest.approx([(v - (2 - 3 * sd)) / (6 * sd) for v in values])
    assert dbsf_normalise([5.0, 5.0]) == [1.0, 1.0]
    assert dbsf_normalise([]) == []
    outlier = dbsf_normalise([0.0] * 20 + [100.0])
    assert outlier[-1] == 1.0 and min(outlier) >= 0.0  # clipped to [0, 1]


def test_dbsf_fusion_weighs_distribution_normalised_scores() -> None:
    from rag.fusion import dbsf_fusion

    lists = {
        "bm25": [Hit("a", 30.0, "a#0"), Hit("b", 10.0, "b#0"), Hit("c", 9.0, "c#0")],
        "dense": [Hit("c", 0.9, "c#0"), Hit("b", 0.5, "b#0"), Hit("a", 0.1, "a#0")],
    }
    assert [h.doc_id for h in dbsf_fusion(lists, {"bm25": 1.0, "dense": 0.0})] == ["a", "b", "c"]
    assert [h.doc_id for h in dbsf_fusion(lists, {"bm25": 0.0, "dense": 1.0})] == ["c", "b", "a"]
    even = {"bm25": 1.0, "dense": 1.0}
    assert fuse(FusionMethod.DBSF, lists, even) == dbsf_fusion(lists, even)


def test_fusion_choice_legs_label_and_json() -> None:
    from rag.fusion import FusionChoice

    hybrid = FusionChoice(FusionMethod.MINMAX, {"bm25": 0.6, "dense": 0.4}, reason="tuned")
    assert hybrid.legs == ("bm25", "dense") and hybrid.label == "minmax dense=0.40"
    assert FusionChoice.from_json(hybrid.to_json()) == hybrid
    alone = FusionChoice(FusionMethod.RRF, {"bm25": 0.0, "dense": 1.0})
    assert alone.legs == ("dense",) and alone.label == "dense alone"
    with pytest.raises(ValueError, match="not all 0"):
        FusionChoice(FusionMethod.RRF, {"bm25": 0.0, "dense": 0.0})
    with pytest.raises(ValueError, match="name bm25 and dense"):
        FusionChoice(FusionMethod.RRF, {"bm25": 1.0})
