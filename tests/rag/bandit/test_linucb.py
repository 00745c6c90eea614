"""LinUCB: it learns a linear-reward problem, keeps A⁻¹ exact, reports honest propensities, respects the
allowed subset, and survives a JSON round trip of its state (mismatches refused with the reason)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rag.bandit.linucb import REFRESH_EVERY, LinUCB, greedy_arm, inverse, sherman_morrison

ARMS = ("a", "b", "c")


def context(rng: np.random.Generator, dim: int) -> np.ndarray:
    return np.append(rng.normal(size=dim - 1), 1.0)  # last feature: the constant 1 (intercept)


def test_it_learns_the_best_arm_of_a_linear_reward_problem() -> None:
    dim = 4
    truth = np.random.default_rng(7).normal(size=(len(ARMS), dim))  # θ per arm
    rng = np.random.default_rng(11)
    bandit = LinUCB(ARMS, dim, alpha=0.5, epsilon=0.05)
    rewards, uniform = [], []
    for _ in range(2000):
        x = context(rng, dim)
        expected = truth @ x
        arm = bandit.choose(x, rng).arm
        reward = float(expected[ARMS.index(arm)] + rng.normal(0, 0.1))
        bandit.update(arm, x, reward)
        rewards.append(reward)
        uniform.append(float(expected.mean()))
    late = slice(1500, None)
    best = 0.0
    agree = 0
    for _ in range(500):  # fresh contexts: the exploit-only choice vs the true best arm
        x = context(rng, dim)
        best += float(np.max(truth @ x)) / 500
        bandit_arm = max(ARMS, key=lambda a: float(bandit.theta(a) @ x))
        agree += bandit_arm == ARMS[int(np.argmax(truth @ x))]
    assert np.mean(rewards[late]) > np.mean(uniform[late]) + 0.5
    assert np.mean(rewards[late]) > 0.85 * best
    assert agree >= 450
    assert sum(bandit.counts.values()) == 2000


def test_a_inv_stays_the_inverse_of_a_including_past_a_refresh() -> None:
    rng = np.random.default_rng(3)
    bandit = LinUCB(["only"], 5, reg=0.5)
    for n in range(REFRESH_EVERY + 20):
        bandit.update("only", rng.normal(size=5) * 3, float(rng.normal()))
        if n in (0, 10, 200, REFRESH_EVERY + 19):
            np.testing.assert_allclose(
                bandit.a_inv("only"), np.linalg.inv(bandit.a_matrix("only")), atol=1e-9
            )
    a = bandit.a_matrix("only")
    np.testing.assert_allclose(bandit.theta("only"), np.linalg.solve(a, bandit.to_state()["b"]["only"]))


def test_sherman_morrison_matches_a_direct_inverse() -> None:
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 4))
    a = m @ m.T + np.eye(4)
    x = rng.normal(size=4)
    expected = inverse(a + np.outer(x, x))
    np.testing.assert_allclose(sherman_morrison(inverse(a), x), expected)


def test_propensities_are_honest() -> None:
    rng = np.random.default_rng(5)
    bandit = LinUCB(ARMS, 3, alpha=0.2, epsilon=0.3)
    for _ in range(30):  # make the arms differ
        x = rng.normal(size=3)
        bandit.update(ARMS[int(rng.integers(3))], x, float(x[0]))
    explored = 0
    for _ in range(300):
        x = rng.normal(size=3)
        choice = bandit.choose(x, rng)
        assert 0 < choice.propensity <= 1
        assert set(choice.scores) == set(ARMS)
        if choice.arm == greedy_arm(choice.scores):
            assert choice.propensity == pytest.approx(1 - 0.3 + 0.3 / 3)
        else:
            assert choice.explored and choice.propensity == pytest.approx(0.3 / 3)
        assert bandit.propensity(choice.arm, x) == pytest.approx(choice.propensity)
        explored += choice.explored
    assert 50 < explored < 130  # ε = 0.3 of 300
    greedy_only = LinUCB(ARMS, 3)
    choice = greedy_only.choose([1.0, 0.0, 0.0], rng)
    assert choice.propensity == 1.0 and not choice.explored


def test_ties_go_to_the_first_arm_in_arm_order() -> None:
    bandit = LinUCB(ARMS, 2)
    rng = np.random.default_rng(0)
    assert bandit.choose([1.0, 1.0], rng).arm == "a"  # untrained: all scores equal
    assert bandit.choose([1.0, 1.0], rng, allowed={"c", "b"}).arm == "b"


def test_allowed_restricts_the_choice_and_the_propensity() -> None:
    rng = np.random.default_rng(1)
    bandit = LinUCB(ARMS, 2, epsilon=0.5)
    bandit.update("a", [1.0, 0.0], 1.0)  # "a" is clearly best …
    for _ in range(100):
        choice = bandit.choose([1.0, 0.0], rng, allowed=["c", "b"])  # … but over budget
        assert choice.arm in {"b", "c"} and list(choice.scores) == ["b", "c"]
        assert choice.propensity in (pytest.approx(0.5 + 0.25), pytest.approx(0.25))
    assert bandit.propensity("a", [1.0, 0.0], allowed=["b"]) == 0.0
    with pytest.raises(ValueError, match=r"unknown arms in allowed: \['z'\]; known arms: \['a', 'b', 'c'\]"):
        bandit.choose([1.0, 0.0], rng, allowed=["b", "z"])
    with pytest.raises(ValueError, match="at least one arm"):
        bandit.choose([1.0, 0.0], rng, allowed=[])


def test_bad_input_is_refused_with_what_was_expected() -> None:
    bandit = LinUCB(ARMS, 3)
    with pytest.raises(ValueError, match=r"unknown arm 'z'; known arms: \['a', 'b', 'c'\]"):
        bandit.update("z", [0.0, 0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match=r"length 3, got shape \(2,\)"):
        bandit.update("a", [0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="reward must be a finite number, got nan"):
        bandit.update("a", [0.0, 0.0, 1.0], float("nan"))
    with pytest.raises(ValueError, match="features must be finite"):
        bandit.scores([0.0, float("inf"), 1.0])
    with pytest.raises(ValueError, match="distinct"):
        LinUCB(["a", "a"], 2)
    with pytest.raises(ValueError, match="dim must be an integer >= 1, got 0"):
        LinUCB(ARMS, 0)
    with pytest.raises(ValueError, match="epsilon must be in"):
        LinUCB(ARMS, 2, epsilon=1.5)
    with pytest.raises(ValueError, match="alpha must be"):
        bandit.alpha = -1.0


def trained(seed: int = 2) -> LinUCB:
    rng = np.random.default_rng(seed)
    bandit = LinUCB(ARMS, 3, alpha=0.7, reg=2.0, epsilon=0.1)
    for _ in range(200):
        x = rng.normal(size=3)
        bandit.update(ARMS[int(rng.integers(3))], x, float(x @ [0.5, -0.2, 0.1]))
    return bandit


def test_state_round_trip_through_json_gives_identical_choices() -> None:
    original = trained()
    restored = LinUCB.from_state(json.loads(json.dumps(original.to_state())), arms=ARMS, dim=3)
    assert restored.counts == original.counts and restored.alpha == 0.7 and restored.reg == 2.0
    rng_a, rng_b, contexts = np.random.default_rng(9), np.random.default_rng(9), np.random.default_rng(4)
    for _ in range(50):
        x = contexts.normal(size=3)
        a, b = original.choose(x, rng_a), restored.choose(x, rng_b)
        assert a.arm == b.arm and a.propensity == b.propensity
        assert a.scores == pytest.approx(b.scores, rel=1e-12)


def test_a_state_that_does_not_fit_is_refused_with_the_reason() -> None:
    state = trained().to_state()
    with pytest.raises(
        ValueError, match=r"arms mismatch: state has \['a', 'b', 'c'\], expected \['a', 'b'\]"
    ):
        LinUCB.from_state(state, arms=["a", "b"])
    with pytest.raises(ValueError, match="dim mismatch: state has 3, expected 4"):
        LinUCB.from_state(state, dim=4)
    with pytest.raises(ValueError, match="schema must be 1, got 99"):
        LinUCB.from_state({**state, "schema": 99})
    with pytest.raises(ValueError, match=r"lacks \['counts'\]"):
        LinUCB.from_state({k: v for k, v in state.items() if k != "counts"})
    with pytest.raises(ValueError, match=r"arm 'b': A must be 3x3 and b of length 3, got A \(2, 2\)"):
        LinUCB.from_state({**state, "A": {**state["A"], "b": [[1.0, 0.0], [0.0, 1.0]]}})
    with pytest.raises(ValueError, match="arm 'c' is missing"):
        LinUCB.from_state({**state, "b": {"a": state["b"]["a"], "b": state["b"]["b"]}})
    with pytest.raises(ValueError, match="count for arm 'a' must be an integer >= 0, got -1"):
        LinUCB.from_state({**state, "counts": {**state["counts"], "a": -1}})
