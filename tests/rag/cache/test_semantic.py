"""The query cache without Redis (rag.cache.semantic.QueryCache): L1 finds the same normalised query of
the same namespace; L2 finds a cached neighbour at or above the similarity threshold that the lexical
guard accepts, and nothing below it; entries expire by the wall clock; only the served index version is
kept; a purge forgets one tenant and no other."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from rag.cache.keys import Namespace
from rag.cache.semantic import QueryCache
from rag.text.analyzer import Analyzer
from tests.rag.cache.conftest import DIM, answer, index, no_idf, ns, vector

pytestmark = pytest.mark.anyio

THRESHOLD = 0.9
TTL_S = 600.0


class WallClock:
    """A wall clock that moves only when told."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(**overrides: Any) -> QueryCache:
    values: dict[str, Any] = {"dim": DIM, "analyzer": Analyzer(), "threshold": THRESHOLD, "ttl_s": TTL_S}
    return QueryCache(**{**values, **overrides})


def at_similarity(v: np.ndarray, similarity: float, seed: int = 99) -> np.ndarray:
    """A vector whose cosine similarity to ``v`` is exactly ``similarity`` (to float32 rounding)."""
    unit = v / np.linalg.norm(v)
    other = vector(seed)
    other = other - other.dot(unit) * unit  # orthogonal to v
    other /= np.linalg.norm(other)
    out: np.ndarray = (similarity * unit + np.sqrt(max(1.0 - similarity**2, 0.0)) * other).astype(np.float32)
    return out


def doc(hit: Any) -> str:
    assert hit is not None, "expected a cache hit"
    return str(hit.answer["results"][0]["doc_id"])


# -- construction ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("threshold", [0.0, -0.5, 1.01])
def test_a_threshold_outside_0_1_is_refused(threshold: float) -> None:
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        make(threshold=threshold)


def test_without_redis_the_cache_is_not_shared() -> None:
    assert make().shared is False
    assert make(secret=b"a secret that needs redis to matter").shared is False


# -- L1 ---------------------------------------------------------------------------------------------------
async def test_l1_finds_the_same_normalised_query_in_the_same_namespace() -> None:
    cache = make()
    await cache.put(ns(), "Which animals hunt mice?", None, answer(doc="cat"))
    hit = await cache.get_exact(ns(), "  which ANIMALS hunt mice ")
    assert hit is not None and hit.level == "l1" and hit.similarity == 1.0
    assert doc(hit) == "cat"
    assert await cache.get_exact(ns(), "which animals hunt rats") is None


async def test_l1_misses_in_another_namespace() -> None:
    cache = make()
    await cache.put(ns(), "which animals hunt mice", None, answer(doc="cat"))
    assert await cache.get_exact(ns("globex"), "which animals hunt mice") is None  # another tenant
    assert await cache.get_exact(ns(version="v2"), "which animals hunt mice") is None  # another version
    assert await cache.get_exact(ns(lang="fr"), "which animals hunt mice") is None  # another filter


async def test_a_put_without_a_vector_stays_out_of_l2() -> None:
    cache = make()
    await cache.put(ns(), "which animals hunt mice", None, answer())
    assert cache.stats().l1_entries == 1 and cache.stats().l2_entries == 0
    assert await cache.get_similar(ns(), "which animals hunt mice", vector(1), no_idf) is None


# -- L2 ---------------------------------------------------------------------------------------------------
async def test_l2_serves_a_neighbour_above_the_threshold_that_the_guard_accepts() -> None:
    cache = make()
    base = vector(1)
    await cache.put(ns(), "which animals hunt mice", base, answer(doc="cat"))
    query = "what animals hunt mice"
    assert await cache.get_exact(ns(), query) is None
    hit = await cache.get_similar(ns(), query, at_similarity(base, 0.95), no_idf)
    assert hit is not None and hit.level == "l2"
    assert hit.similarity == pytest.approx(0.95, abs=1e-4)
    assert doc(hit) == "cat"
    # the answer is now in L1 under the new query's own key
    again = await cache.get_exact(ns(), query)
    assert again is not None and again.level == "l1" and doc(again) == "cat"


async def test_l2_at_the_threshold_hits_and_below_it_misses() -> None:
    cache = make()
    base = vector(1)
    await cache.put(ns(), "which animals hunt mice", base, answer(doc="cat"))
    assert await cache.get_similar(ns(), "what hunts mice", at_similarity(base, 0.85), no_idf) is None
    assert await cache.get_similar(ns(), "what hunts mice", at_similarity(base, -1.0), no_idf) is None
    hit = await cache.get_similar(ns(), "what hunts mice", at_similarity(base, THRESHOLD + 1e-4), no_idf)
    assert doc(hit) == "cat"


async def test_l2_does_not_serve_a_close_neighbour_the_guard_refuses() -> None:
    cache = make()
    base = vector(1)
    await cache.put(ns(), "does aspirin cause bleeding", base, answer(doc="yes"))
    close = at_similarity(base, 0.99)
    assert await cache.get_similar(ns(), "does aspirin not cause bleeding", close, no_idf) is None
    assert await cache.get_similar(ns(), "does aspirin cause bleeding in 2 days", close, no_idf) is None
    assert doc(await cache.get_similar(ns(), "does aspirin cause bleeding?", close, no_idf)) == "yes"


async def test_l2_serves_the_most_similar_neighbour_the_guard_accepts() -> None:
    cache = make()
    base = vector(1)
    await cache.put(ns(), "does aspirin cause bleeding", at_similarity(base, 0.93, seed=5), answer(doc="far"))
    await cache.put(
        ns(), "does aspirin not cause bleeding", at_similarity(base, 0.99, seed=6), answer(doc="no")
    )
    await cache.put(ns(), "aspirin and bleeding", at_similarity(base, 0.97, seed=7), answer(doc="near"))
    # the closest ("not") is refused by the guard; of the rest, the more similar wins
    hit = await cache.get_similar(ns(), "does aspirin cause bleeding", base, no_idf)
    assert doc(hit) == "near"


async def test_l2_is_per_tenant_and_per_namespace() -> None:
    cache = make()
    base = vector(1)
    await cache.put(ns(), "which animals hunt mice", base, answer(doc="cat"))
    assert await cache.get_similar(ns("globex"), "which animals hunt mice", base, no_idf) is None
    assert await cache.get_similar(ns(lang="fr"), "which animals hunt mice", base, no_idf) is None
    assert doc(await cache.get_similar(ns(), "which animals hunt mice", base, no_idf)) == "cat"


# -- expiry -----------------------------------------------------------------------------------------------
async def test_l2_entries_expire_by_the_wall_clock() -> None:
    wall = WallClock()
    cache = make(wall=wall)
    base = vector(1)
    await cache.put(ns(), "which animals hunt mice", base, answer(doc="cat"))
    wall.now += TTL_S - 1
    assert doc(await cache.get_similar(ns(), "what animals hunt mice", base, no_idf)) == "cat"
    wall.now += 1  # exactly the TTL: expired
    assert await cache.get_similar(ns(), "what hunts mice", base, no_idf) is None
    assert cache.stats().l2_entries == 0  # pruned by the lookup, not only skipped


async def test_an_entry_put_later_outlives_an_earlier_one() -> None:
    wall = WallClock()
    cache = make(wall=wall)
    await cache.put(ns(), "which animals hunt mice", vector(1), answer(doc="early"))
    wall.now += TTL_S / 2
    await cache.put(ns(), "which birds sing at night", vector(2), answer(doc="late"))
    wall.now += TTL_S / 2
    assert await cache.get_similar(ns(), "what animals hunt mice", vector(1), no_idf) is None
    assert doc(await cache.get_similar(ns(), "what birds sing at night", vector(2), no_idf)) == "late"
    assert cache.stats().l2_entries == 1


# -- the served index -----------------------------------------------------------------------------------
async def test_serve_index_drops_other_versions_and_refuses_them_from_now_on() -> None:
    cache = make()
    await cache.put(ns(version="v1"), "which animals hunt mice", vector(1), answer("v1", doc="old"))
    await cache.put(ns("globex", version="v1"), "the globex plan", vector(2), answer("v1", doc="plan"))
    assert cache.stats().l2_entries == 2
    cache.serve_index(index("v2"))
    assert cache.stats().l2_entries == 0  # every tenant's v1 spaces are gone
    assert await cache.get_similar(ns(version="v1"), "which animals hunt mice", vector(1), no_idf) is None
    # a late put for the old version (a request that started before the switch) is not held in L2
    await cache.put(ns(version="v1"), "which birds sing", vector(3), answer("v1"))
    assert cache.stats().l2_entries == 0
    # the served version is
    await cache.put(ns(version="v2"), "which animals hunt mice", vector(1), answer("v2", doc="new"))
    assert cache.stats().l2_entries == 1
    hit = await cache.get_similar(ns(version="v2"), "what animals hunt mice", vector(1), no_idf)
    assert doc(hit) == "new"


async def test_serving_the_same_version_again_keeps_its_entries() -> None:
    cache = make()
    cache.serve_index(index("v1"))
    await cache.put(ns(version="v1"), "which animals hunt mice", vector(1), answer(doc="cat"))
    cache.serve_index(index("v1"))
    assert cache.stats().l2_entries == 1
    assert (
        doc(await cache.get_similar(ns(version="v1"), "what animals hunt mice", vector(1), no_idf)) == "cat"
    )


async def test_two_collections_with_the_same_version_name_share_nothing() -> None:
    """Every data dir's first version is ``v1``: the index identity, not the name, keeps them apart."""
    cache = make()
    here = Namespace.of("acme", index("v1", collection="svc"), "hash:16", {"filters": {}})
    there = Namespace.of("acme", index("v1", collection="other"), "hash:16", {"filters": {}})
    await cache.put(here, "which animals hunt mice", vector(1), answer(doc="cat"))
    assert await cache.get_exact(there, "which animals hunt mice") is None
    assert await cache.get_similar(there, "what animals hunt mice", vector(1), no_idf) is None
    cache.serve_index(index("v1", collection="other"))
    assert cache.stats().l2_entries == 0


# -- purge ------------------------------------------------------------------------------------------------
async def test_purge_forgets_one_tenant_and_no_other() -> None:
    cache = make()
    for tenant, d in (("acme", "cat"), ("globex", "plan")):
        await cache.put(ns(tenant), "which animals hunt mice", vector(1), answer(doc=d))
    await cache.purge("acme")
    assert await cache.get_exact(ns("acme"), "which animals hunt mice") is None
    assert await cache.get_similar(ns("acme"), "what animals hunt mice", vector(1), no_idf) is None
    assert cache.stats("acme").l2_entries == 0
    assert doc(await cache.get_exact(ns("globex"), "which animals hunt mice")) == "plan"
    assert doc(await cache.get_similar(ns("globex"), "what animals hunt mice", vector(1), no_idf)) == "plan"
    assert cache.stats("globex").l2_entries == 1


async def test_purge_does_not_touch_a_tenant_whose_name_extends_the_purged_one() -> None:
    """L1 keys start with the tenant: purging ``acme`` must not drop ``acme2``'s (a prefix match would)."""
    cache = make()
    await cache.put(ns("acme"), "which animals hunt mice", None, answer(doc="cat"))
    await cache.put(ns("acme2"), "which animals hunt mice", None, answer(doc="dog"))
    await cache.purge("acme")
    assert await cache.get_exact(ns("acme"), "which animals hunt mice") is None
    assert doc(await cache.get_exact(ns("acme2"), "which animals hunt mice")) == "dog"


async def test_a_purged_tenant_caches_again_afterwards() -> None:
    cache = make()
    await cache.put(ns(), "which animals hunt mice", vector(1), answer(doc="old"))
    await cache.purge("acme")
    await cache.put(ns(), "which animals hunt mice", vector(1), answer(doc="new"))
    assert doc(await cache.get_exact(ns(), "which animals hunt mice")) == "new"
    assert doc(await cache.get_similar(ns(), "what animals hunt mice", vector(1), no_idf)) == "new"


async def test_a_degraded_answer_is_held_in_l1_only_and_never_in_place_of_a_full_one() -> None:
    cache = make()
    space = ns()
    degraded = {
        **answer(doc="owl"),
        "degraded": [{"step": "retrieve", "sub_query": 0, "code": "bm25_only", "reason": "x"}],
    }
    assert cache.put_degraded(space, "who hunts mice", degraded)
    hit = await cache.get_exact(space, "who hunts mice")
    assert hit is not None and hit.answer["degraded"]
    assert cache.stats().l2_entries == 0  # never in L2 (nor, with Redis, shared)
    await cache.put(space, "who hunts mice", vector(1), answer("full"))  # the full answer replaces it
    assert cache.put_degraded(space, "who hunts mice", degraded) is False  # and is never replaced back
    hit = await cache.get_exact(space, "who hunts mice")
    assert hit is not None and "degraded" not in hit.answer
    assert make(degraded_ttl_s=0).put_degraded(space, "who hunts mice", degraded) is False
