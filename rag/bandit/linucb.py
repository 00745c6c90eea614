"""Disjoint LinUCB (Li, Chu, Langford, Schapire 2010, algorithm 1) over named arms, with ε-exploration.

Each arm ``a`` keeps a ridge regression of reward on the context ``x`` (a vector of ``dim`` floats):

    A_a = reg·I + Σ x xᵀ        b_a = Σ r·x        θ_a = A_a⁻¹ b_a
    UCB_a(x) = θ_aᵀ x + alpha·sqrt(xᵀ A_a⁻¹ x)

``A_a⁻¹`` is kept up to date with the Sherman–Morrison identity (O(dim²) per update instead of an
inversion); every :data:`REFRESH_EVERY` updates of an arm it is recomputed from ``A_a`` so rounding does
not pile up. With probability ``epsilon`` the policy picks uniformly among the allowed arms, otherwise the
arm with the highest UCB (ties go to the first arm in arm order). The probability it had of picking the
arm it picked (the *propensity*) comes with every choice, so logged decisions support off-policy (IPS)
evaluation; that needs ``epsilon > 0``, since a greedy-only policy gives the other arms no support.

The features should be of order one (scaled or standardised) and include a constant 1 when the reward
has an intercept: the model has none of its own.

Not thread-safe: the service calls it from its event loop only, so no locking is needed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

SCHEMA_VERSION = 1
STATE_KEYS = ("arms", "dim", "alpha", "reg", "epsilon", "counts", "A", "b")
REFRESH_EVERY = 1024  # updates of an arm between exact re-inversions of its A

Vector = npt.NDArray[np.float64]
Matrix = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Choice:
    arm: str
    propensity: float  # probability the policy had of picking ``arm`` (over the allowed arms)
    scores: dict[str, float]  # UCB score of every allowed arm
    explored: bool  # picked by the ε-branch (uniformly), not as the argmax


# --- the math: small pure functions ---------------------------------------------------------------


def inverse(a: Matrix) -> Matrix:
    """A⁻¹ (raises numpy.linalg.LinAlgError when A is singular)."""
    return np.asarray(np.linalg.inv(a), dtype=np.float64)


def sherman_morrison(a_inv: Matrix, x: Vector) -> Matrix:
    """(A + x xᵀ)⁻¹ from A⁻¹ (A symmetric positive definite)."""
    a_inv_x = a_inv @ x
    return a_inv - np.outer(a_inv_x, a_inv_x) / (1.0 + float(x @ a_inv_x))


def ucb_score(a_inv: Matrix, b: Vector, x: Vector, alpha: float) -> float:
    """θᵀx + alpha·sqrt(xᵀ A⁻¹ x) with θ = A⁻¹ b."""
    theta = a_inv @ b
    width = float(x @ a_inv @ x)
    return float(theta @ x) + alpha * math.sqrt(max(width, 0.0))


def greedy_arm(scores: Mapping[str, float]) -> str:
    """The arm with the highest score; ties go to the first in the mapping's order."""
    best = next(iter(scores))
    for arm, score in scores.items():
        if score > scores[best]:
            best = arm
    return best


def epsilon_greedy_propensity(is_greedy: bool, epsilon: float, n_arms: int) -> float:
    """P(pick this arm) under ε-greedy: (1−ε)·[arm is greedy] + ε/K."""
    return (1.0 - epsilon) * float(is_greedy) + epsilon / n_arms


# --- the policy -----------------------------------------------------------------------------------


class LinUCB:
    """LinUCB with one ridge model per arm; see the module docstring for the math."""

    def __init__(
        self, arms: Sequence[str], dim: int, *, alpha: float = 1.0, reg: float = 1.0, epsilon: float = 0.0
    ) -> None:
        if isinstance(arms, str) or not arms:
            raise ValueError(f"arms must be a non-empty sequence of names, got {arms!r}")
        if len(set(arms)) != len(arms) or not all(isinstance(a, str) and a for a in arms):
            raise ValueError(f"arms must be distinct non-empty strings, got {list(arms)}")
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be an integer >= 1, got {dim!r}")
        if not (math.isfinite(reg) and reg > 0):
            raise ValueError(f"reg must be a finite number > 0, got {reg}")
        self.arms: tuple[str, ...] = tuple(arms)
        self.dim = dim
        self.reg = float(reg)
        self.alpha = alpha
        self.epsilon = epsilon
        self._a = {arm: self.reg * np.eye(dim) for arm in self.arms}
        self._a_inv = {arm: np.eye(dim) / self.reg for arm in self.arms}
        self._b = {arm: np.zeros(dim) for arm in self.arms}
        self._counts = dict.fromkeys(self.arms, 0)

    # alpha and epsilon are hyper-parameters: they can change (e.g. from settings) without touching the
    # learnt statistics, so they are settable, with the same checks as in the constructor.
    @property
    def alpha(self) -> float:
        return self._alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"alpha must be a finite number >= 0, got {value}")
        self._alpha = float(value)

    @property
    def epsilon(self) -> float:
        return self._epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"epsilon must be in [0, 1], got {value}")
        self._epsilon = float(value)

    @property
    def counts(self) -> dict[str, int]:
        """Updates per arm."""
        return dict(self._counts)

    def theta(self, arm: str) -> Vector:
        """The arm's ridge estimate A⁻¹b."""
        self._check_arm(arm)
        return self._a_inv[arm] @ self._b[arm]

    def a_inv(self, arm: str) -> Matrix:
        """A copy of the arm's A⁻¹ (as maintained by Sherman–Morrison)."""
        self._check_arm(arm)
        return self._a_inv[arm].copy()

    def a_matrix(self, arm: str) -> Matrix:
        """A copy of the arm's A = reg·I + Σ x xᵀ."""
        self._check_arm(arm)
        return self._a[arm].copy()

    # --- acting -----------------------------------------------------------------------------------

    def scores(self, x: Sequence[float] | Vector, allowed: Collection[str] | None = None) -> dict[str, float]:
        """UCB score of each allowed arm (all arms when ``allowed`` is None), in arm order."""
        v = self._vector(x)
        return {
            arm: ucb_score(self._a_inv[arm], self._b[arm], v, self.alpha) for arm in self._allowed(allowed)
        }

    def choose(
        self,
        x: Sequence[float] | Vector,
        rng: np.random.Generator,
        allowed: Collection[str] | None = None,
    ) -> Choice:
        """Pick an arm for context ``x`` among ``allowed`` (default: all), ε-greedy over the UCB scores."""
        scores = self.scores(x, allowed)
        candidates = list(scores)
        greedy = greedy_arm(scores)
        explored = self.epsilon > 0 and rng.random() < self.epsilon
        arm = candidates[int(rng.integers(len(candidates)))] if explored else greedy
        propensity = epsilon_greedy_propensity(arm == greedy, self.epsilon, len(candidates))
        return Choice(arm=arm, propensity=propensity, scores=scores, explored=explored)

    def probabilities(
        self, x: Sequence[float] | Vector, allowed: Collection[str] | None = None
    ) -> dict[str, float]:
        """The probability this policy, as it is now, gives each allowed arm for ``x`` (sums to 1)."""
        scores = self.scores(x, allowed)
        greedy = greedy_arm(scores)
        return {arm: epsilon_greedy_propensity(arm == greedy, self.epsilon, len(scores)) for arm in scores}

    def propensity(
        self, arm: str, x: Sequence[float] | Vector, allowed: Collection[str] | None = None
    ) -> float:
        """The probability this policy, as it is now, would pick ``arm`` for ``x`` (0 if not allowed)."""
        self._check_arm(arm)
        scores = self.scores(x, allowed)
        if arm not in scores:
            return 0.0
        return epsilon_greedy_propensity(arm == greedy_arm(scores), self.epsilon, len(scores))

    # --- learning ---------------------------------------------------------------------------------

    def update(self, arm: str, x: Sequence[float] | Vector, reward: float) -> None:
        """Add one observation: the reward ``arm`` earned for context ``x``."""
        self._check_arm(arm)
        v = self._vector(x)
        if isinstance(reward, bool) or not math.isfinite(reward):
            raise ValueError(f"reward must be a finite number, got {reward!r}")
        self._a[arm] += np.outer(v, v)
        self._b[arm] += float(reward) * v
        self._counts[arm] += 1
        if self._counts[arm] % REFRESH_EVERY == 0:
            self._a_inv[arm] = inverse(self._a[arm])
        else:
            self._a_inv[arm] = sherman_morrison(self._a_inv[arm], v)

    def absorb(self, arm: str, a: Matrix, b: Vector, count: int) -> None:
        """Add statistics learnt elsewhere for ``arm``: ``a`` = Σ x xᵀ, ``b`` = Σ r·x over ``count``
        observations. A and b are sums, so a model that absorbs another's updates equals one that saw
        them all (up to float rounding); A⁻¹ is recomputed exactly."""
        self._check_arm(arm)
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        if a.shape != (self.dim, self.dim) or b.shape != (self.dim,):
            raise ValueError(
                f"statistics for arm {arm!r}: a must be {self.dim}x{self.dim} and b of length {self.dim}, "
                f"got a {a.shape} and b {b.shape}"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"statistics for arm {arm!r} hold non-finite values")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"statistics count for arm {arm!r} must be an integer >= 0, got {count!r}")
        self._a[arm] = self._a[arm] + a
        self._b[arm] = self._b[arm] + b
        self._counts[arm] += count
        self._a_inv[arm] = inverse(self._a[arm])

    # --- persistence ------------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """A JSON-safe snapshot (A and b per arm; A⁻¹ is recomputed on load)."""
        return {
            "schema": SCHEMA_VERSION,
            "arms": list(self.arms),
            "dim": self.dim,
            "alpha": self.alpha,
            "reg": self.reg,
            "epsilon": self.epsilon,
            "counts": dict(self._counts),
            "A": {arm: self._a[arm].tolist() for arm in self.arms},
            "b": {arm: self._b[arm].tolist() for arm in self.arms},
        }

    @classmethod
    def from_state(
        cls, state: Mapping[str, Any], *, arms: Sequence[str] | None = None, dim: int | None = None
    ) -> LinUCB:
        """Rebuild a policy from :meth:`to_state`. With ``arms``/``dim`` (what the service is configured
        for) a state learnt for other arms or another feature dimension is refused with a ValueError."""
        if not isinstance(state, Mapping):
            raise ValueError(f"bandit state must be a mapping, got {type(state).__name__}")
        if state.get("schema") != SCHEMA_VERSION:
            raise ValueError(f"bandit state schema must be {SCHEMA_VERSION}, got {state.get('schema')!r}")
        missing = [k for k in STATE_KEYS if k not in state]
        if missing:
            raise ValueError(f"bandit state lacks {missing}")
        saved_arms = list(state["arms"])
        if arms is not None and saved_arms != list(arms):
            raise ValueError(f"bandit state arms mismatch: state has {saved_arms}, expected {list(arms)}")
        if dim is not None and state["dim"] != dim:
            raise ValueError(f"bandit state dim mismatch: state has {state['dim']}, expected {dim}")
        try:
            policy = cls(
                saved_arms, state["dim"], alpha=state["alpha"], reg=state["reg"], epsilon=state["epsilon"]
            )
        except TypeError as exc:  # e.g. a string where a number belongs
            raise ValueError(f"bandit state is malformed: {exc}") from None
        for arm in policy.arms:
            policy._restore_arm(arm, state)
        return policy

    def _restore_arm(self, arm: str, state: Mapping[str, Any]) -> None:
        try:
            a = np.asarray(state["A"][arm], dtype=np.float64)
            b = np.asarray(state["b"][arm], dtype=np.float64)
            count = state["counts"][arm]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bandit state for arm {arm!r} is missing or malformed: {exc}") from None
        if a.shape != (self.dim, self.dim) or b.shape != (self.dim,):
            raise ValueError(
                f"bandit state for arm {arm!r}: A must be {self.dim}x{self.dim} and b of length {self.dim}, "
                f"got A {a.shape} and b {b.shape}"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError(f"bandit state for arm {arm!r} holds non-finite values")
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"bandit state count for arm {arm!r} must be an integer >= 0, got {count!r}")
        try:
            a_inv = inverse(a)
        except np.linalg.LinAlgError:
            raise ValueError(f"bandit state for arm {arm!r}: A is singular") from None
        self._a[arm], self._a_inv[arm], self._b[arm], self._counts[arm] = a, a_inv, b, count

    # --- checks -----------------------------------------------------------------------------------

    def _check_arm(self, arm: str) -> None:
        if arm not in self._counts:
            raise ValueError(f"unknown arm {arm!r}; known arms: {list(self.arms)}")

    def _allowed(self, allowed: Collection[str] | None) -> list[str]:
        if allowed is None:
            return list(self.arms)
        unknown = sorted(set(allowed) - set(self.arms))
        if unknown:
            raise ValueError(f"unknown arms in allowed: {unknown}; known arms: {list(self.arms)}")
        kept = [arm for arm in self.arms if arm in allowed]
        if not kept:
            raise ValueError(f"allowed must name at least one arm of {list(self.arms)}, got none")
        return kept

    def _vector(self, x: Sequence[float] | Vector) -> Vector:
        v = np.asarray(x, dtype=np.float64)
        if v.shape != (self.dim,):
            raise ValueError(f"features must be a vector of length {self.dim}, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise ValueError(f"features must be finite, got {v.tolist()}")
        return v
