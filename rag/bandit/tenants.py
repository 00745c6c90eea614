"""One bandit per tenant and a shared one, mixed with a stated weight: no tenant's feedback steers another
tenant's plans by more than that weight.

Each tenant ``T`` has its own :class:`~rag.bandit.linucb.LinUCB`, which learns from ``T``'s feedback only;
the *shared* LinUCB learns from every tenant's feedback (it is what carries experience to a tenant that
has little of its own). ``T``'s arm for context ``x`` is drawn from the mixture

    π_T(a | x) = (1 − w) · π_own(T)(a | x) + w · π_shared(a | x)        (w = ``shared_weight``)

and the propensity logged with the choice is that mixture's probability of the arm (what off-policy
evaluation needs). **Invariant**: feedback from tenants other than ``T`` changes only π_shared, so it
moves π_T(· | x) by at most ``w`` in total variation — no arm's probability for ``T`` moves by more than
``w``, however much feedback the others send. ``w = 0``: tenants learn apart; ``w = 1``: one bandit for
all (the behaviour before per-tenant models). With one tenant, its own model and the shared one see the
same feedback and agree, so the mixture is that tenant's bandit.

A tenant without feedback yet routes its ``1 − w`` share with a fresh model (its ε-exploration and ties
going to the first arm), so it learns its own preferences from its own feedback. Own models exist only for
tenants that gave feedback (authenticated, configured tenants): a few kB each.

State (:meth:`TenantBandits.to_state`): the shared model's LinUCB state, plus ``"tenants"`` mapping each
tenant to its own model's state. A state without ``"tenants"`` (saved by one global bandit) restores as
the shared model, with every tenant's own model fresh.

Not thread-safe, like LinUCB: the service calls it from its event loop only.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import numpy as np

from rag.bandit.delta import Delta
from rag.bandit.linucb import Choice, LinUCB, Vector
from rag.tenancy import check_tenant


def mixture(own: Mapping[str, float], shared: Mapping[str, float], weight: float) -> dict[str, float]:
    """``(1 − weight)·own + weight·shared``, arm by arm (both over the same arms)."""
    return {arm: (1.0 - weight) * p + weight * shared[arm] for arm, p in own.items()}


class TenantBandits:
    """Per-tenant LinUCB models plus a shared one; see the module docstring for the policy."""

    def __init__(
        self,
        arms: Sequence[str],
        dim: int,
        *,
        shared_weight: float,
        alpha: float = 1.0,
        reg: float = 1.0,
        epsilon: float = 0.0,
    ) -> None:
        if isinstance(shared_weight, bool) or not (math.isfinite(shared_weight) and 0 <= shared_weight <= 1):
            raise ValueError(f"shared_weight must be a number in [0, 1], got {shared_weight!r}")
        self.shared_weight = float(shared_weight)
        self.shared = LinUCB(arms, dim, alpha=alpha, reg=reg, epsilon=epsilon)
        self._own: dict[str, LinUCB] = {}
        self._blank = self._fresh()  # the own model of a tenant that has not given feedback yet

    # -- hyper-parameters, applied to every model --------------------------------------------------
    @property
    def arms(self) -> tuple[str, ...]:
        return self.shared.arms

    @property
    def dim(self) -> int:
        return self.shared.dim

    @property
    def alpha(self) -> float:
        return self.shared.alpha

    @alpha.setter
    def alpha(self, value: float) -> None:
        for model in self._models():
            model.alpha = value

    @property
    def epsilon(self) -> float:
        return self.shared.epsilon

    @epsilon.setter
    def epsilon(self, value: float) -> None:
        for model in self._models():
            model.epsilon = value

    @property
    def counts(self) -> dict[str, int]:
        """Updates per arm, all tenants together (the shared model's)."""
        return self.shared.counts

    def tenant_counts(self, tenant: str) -> dict[str, int]:
        """Updates per arm from ``tenant``'s own feedback."""
        return self.own(tenant).counts

    def own(self, tenant: str) -> LinUCB:
        """``tenant``'s own model (a fresh one, not kept, when it has given no feedback yet)."""
        return self._own.get(tenant, self._blank)

    # -- acting ------------------------------------------------------------------------------------
    def probabilities(
        self, tenant: str, x: Sequence[float] | Vector, allowed: Collection[str] | None = None
    ) -> dict[str, float]:
        """π_T(· | x) over the allowed arms: the mixture of ``tenant``'s own policy and the shared one."""
        own = self.own(tenant).probabilities(x, allowed)
        return mixture(own, self.shared.probabilities(x, allowed), self.shared_weight)

    def choose(
        self,
        tenant: str,
        x: Sequence[float] | Vector,
        rng: np.random.Generator,
        allowed: Collection[str] | None = None,
    ) -> Choice:
        """Draw ``tenant``'s arm from the mixture; the propensity is the mixture's probability of it."""
        use_shared = rng.random() < self.shared_weight
        model = self.shared if use_shared else self.own(tenant)
        choice = model.choose(x, rng, allowed)
        propensity = self.probabilities(tenant, x, allowed)[choice.arm]
        return Choice(arm=choice.arm, propensity=propensity, scores=choice.scores, explored=choice.explored)

    # -- learning ----------------------------------------------------------------------------------
    def update(self, tenant: str, arm: str, x: Sequence[float] | Vector, reward: float) -> None:
        """One observation from ``tenant``'s feedback: its own model and the shared one learn it."""
        own = self._own.get(tenant)
        if own is None:
            check_tenant(tenant)
            own = self._own[tenant] = self._fresh()
        own.update(arm, x, reward)
        self.shared.update(arm, x, reward)

    def absorb(self, delta: Delta) -> None:
        """Add the sums learnt elsewhere (another replica's updates, or this one's since a merge): each
        model's A, b and counts grow by its part of ``delta``; a tenant's model is created if needed."""
        for model, arm, sums in delta:
            target = self.shared if model is None else self._own.get(model)
            if target is None:
                assert model is not None
                target = self._own[check_tenant(model)] = self._fresh()
            target.absorb(arm, sums.a, sums.b, sums.count)

    def adopt(self, other: TenantBandits) -> None:
        """Take ``other``'s models in place (whoever holds this object sees them); same arms and dim."""
        if other.arms != self.arms or other.dim != self.dim:
            raise ValueError(
                f"cannot adopt a bandit over arms {list(other.arms)} (dim {other.dim}), this one has "
                f"{list(self.arms)} (dim {self.dim})"
            )
        self.shared, self._own, self._blank = other.shared, other._own, other._blank

    # -- persistence -------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """JSON-safe: the shared model's state with the tenants' own states under ``"tenants"``."""
        return {**self.shared.to_state(), "tenants": {t: m.to_state() for t, m in self._own.items()}}

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        shared_weight: float,
        arms: Sequence[str] | None = None,
        dim: int | None = None,
    ) -> TenantBandits:
        """Rebuild from :meth:`to_state` (or a single LinUCB state: the shared model). ValueError for a
        state learnt for other arms or dimension, or a malformed one (see :meth:`LinUCB.from_state`)."""
        shared = LinUCB.from_state(state, arms=arms, dim=dim)
        tenants = state.get("tenants", {})
        if not isinstance(tenants, Mapping):
            raise ValueError(f"bandit state 'tenants' must be a mapping, got {type(tenants).__name__}")
        bandits = cls(
            shared.arms,
            shared.dim,
            shared_weight=shared_weight,
            alpha=shared.alpha,
            reg=shared.reg,
            epsilon=shared.epsilon,
        )
        bandits.shared = shared
        for tenant, own_state in tenants.items():
            if not isinstance(tenant, str):
                raise ValueError(f"bandit state tenant names must be strings, got {tenant!r}")
            check_tenant(tenant)
            try:
                own = LinUCB.from_state(own_state, arms=shared.arms, dim=shared.dim)
            except ValueError as exc:
                raise ValueError(f"bandit state of tenant {tenant!r}: {exc}") from None
            own.alpha, own.epsilon = shared.alpha, shared.epsilon
            bandits._own[tenant] = own
        return bandits

    # -- helpers -----------------------------------------------------------------------------------
    def _fresh(self) -> LinUCB:
        s = self.shared
        return LinUCB(s.arms, s.dim, alpha=s.alpha, reg=s.reg, epsilon=s.epsilon)

    def _models(self) -> list[LinUCB]:
        return [self.shared, self._blank, *self._own.values()]
