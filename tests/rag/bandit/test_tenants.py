"""Per-tenant bandits with a shared model: another tenant's feedback moves a tenant's arm probabilities by
at most the shared weight; one tenant alone is one bandit; the state round-trips (and an old single-model
state restores as the shared model)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.bandit.linucb import LinUCB
from rag.bandit.tenants import TenantBandits

ARMS = ("bm25", "hybrid", "multi")
DIM = 3


def contexts(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.append(rng.uniform(0, 1, size=DIM - 1), 1.0) for _ in range(n)]


@pytest.mark.parametrize("weight", [0.0, 0.2, 0.5, 1.0])
def test_a_flood_from_one_tenant_moves_another_tenants_probabilities_by_at_most_the_weight(
    weight: float,
) -> None:
    bandits = TenantBandits(ARMS, DIM, shared_weight=weight, alpha=0.5, epsilon=0.1)
    rng = np.random.default_rng(1)
    for x in contexts(50, seed=2):  # globex has preferences of its own: bm25
        bandits.update("globex", "bm25", x, 1.0)
    probes = contexts(20, seed=3)
    before = [bandits.probabilities("globex", x) for x in probes]
    for x in contexts(5000, seed=4):  # acme floods: multi is great, bm25 terrible
        bandits.update("acme", "multi", x, 1.0)
        bandits.update("acme", "bm25", x, -1.0)
    after = [bandits.probabilities("globex", x) for x in probes]
    moved = max(abs(a[arm] - b[arm]) for a, b in zip(after, before, strict=True) for arm in ARMS)
    assert moved <= weight + 1e-12
    if weight > 0:
        assert moved > weight / 2  # the shared model did learn acme's flood
    assert all(abs(sum(p.values()) - 1.0) < 1e-12 for p in after)
    choice = bandits.choose("globex", probes[0], rng)
    assert choice.propensity == pytest.approx(after[0][choice.arm])


def test_one_tenant_alone_is_one_bandit() -> None:
    single = LinUCB(ARMS, DIM, alpha=0.5, epsilon=0.1)
    mixed = TenantBandits(ARMS, DIM, shared_weight=0.3, alpha=0.5, epsilon=0.1)
    rng = np.random.default_rng(5)
    for i, x in enumerate(contexts(200, seed=6)):
        arm = ARMS[i % 3]
        reward = float(rng.normal())
        single.update(arm, x, reward)
        mixed.update("acme", arm, x, reward)
    for x in contexts(20, seed=7):
        assert mixed.probabilities("acme", x) == pytest.approx(single.probabilities(x))


def test_the_state_round_trips_and_an_old_single_model_state_is_the_shared_model() -> None:
    bandits = TenantBandits(ARMS, DIM, shared_weight=0.2, alpha=0.5, epsilon=0.1)
    for x in contexts(30):
        bandits.update("acme", "hybrid", x, 0.5)
        bandits.update("globex", "bm25", x, 0.7)
    state = json.loads(json.dumps(bandits.to_state()))
    back = TenantBandits.from_state(state, shared_weight=0.2, arms=ARMS, dim=DIM)
    assert back.counts == bandits.counts and back.tenant_counts("acme") == bandits.tenant_counts("acme")
    for x in contexts(5, seed=9):
        for tenant in ("acme", "globex", "initech"):
            assert back.probabilities(tenant, x) == pytest.approx(bandits.probabilities(tenant, x))
    old = LinUCB(ARMS, DIM, alpha=0.5, epsilon=0.1)
    old.update("multi", contexts(1)[0], 1.0)
    migrated = TenantBandits.from_state(old.to_state(), shared_weight=0.2, arms=ARMS, dim=DIM)
    assert migrated.counts == old.counts and migrated.tenant_counts("acme") == dict.fromkeys(ARMS, 0)
    with pytest.raises(ValueError, match="tenant must match"):
        TenantBandits.from_state({**state, "tenants": {"Bad Name": state}}, shared_weight=0.2)
    with pytest.raises(ValueError, match="shared_weight"):
        TenantBandits(ARMS, DIM, shared_weight=1.5)


def test_hyper_parameters_reach_every_model() -> None:
    bandits = TenantBandits(ARMS, DIM, shared_weight=0.2, epsilon=0.1)
    bandits.update("acme", "bm25", contexts(1)[0], 1.0)
    bandits.epsilon, bandits.alpha = 0.3, 2.0
    assert bandits.own("acme").epsilon == 0.3 and bandits.own("globex").alpha == 2.0
    assert bandits.shared.epsilon == 0.3
