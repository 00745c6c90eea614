"""What a replica has learnt since it last merged: LinUCB's sufficient statistics, which add up.

Every model of :class:`~rag.bandit.tenants.TenantBandits` (the shared one and each tenant's own) keeps
per arm ``A = reg·I + Σ x xᵀ``, ``b = Σ r·x`` and a count. Those are sums, so N replicas that each
collect their own ``(Σ x xᵀ, Σ r·x, n)`` since the last merge and add them to one stored state end with
the state of one replica fed every stream (the order of float additions aside). A :class:`Delta` is those
sums, per (model, arm); ``None`` names the shared model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from rag.bandit.linucb import Matrix, Vector


@dataclass(slots=True)
class ArmSums:
    a: Matrix  # Σ x xᵀ
    b: Vector  # Σ r·x
    count: int


Model = str | None  # a tenant's own model, or None: the shared one


class Delta:
    """Σ x xᵀ, Σ r·x and the count per (model, arm), for the updates since the last merge."""

    def __init__(self) -> None:
        self._sums: dict[tuple[Model, str], ArmSums] = {}

    def add(self, tenant: str, arm: str, x: Sequence[float] | Vector, reward: float) -> None:
        """One observation of ``tenant``'s feedback: its own model's sums and the shared model's grow
        (as :meth:`TenantBandits.update <rag.bandit.tenants.TenantBandits.update>` updates both)."""
        v = np.asarray(x, dtype=np.float64)
        outer, rx = np.outer(v, v), float(reward) * v
        for model in (tenant, None):
            sums = self._sums.get((model, arm))
            if sums is None:
                self._sums[(model, arm)] = ArmSums(outer.copy(), rx.copy(), 1)
            else:
                sums.a += outer
                sums.b += rx
                sums.count += 1

    def extend(self, other: Delta) -> None:
        """Add ``other``'s sums to these."""
        for model, arm, sums in other:
            mine = self._sums.get((model, arm))
            if mine is None:
                self._sums[(model, arm)] = ArmSums(sums.a.copy(), sums.b.copy(), sums.count)
            else:
                mine.a += sums.a
                mine.b += sums.b
                mine.count += sums.count

    @property
    def updates(self) -> int:
        """Observations held (each counted once, on the shared model)."""
        return sum(s.count for (model, _), s in self._sums.items() if model is None)

    def __bool__(self) -> bool:
        return bool(self._sums)

    def __iter__(self) -> Iterator[tuple[Model, str, ArmSums]]:
        for (model, arm), sums in self._sums.items():
            yield model, arm, sums
