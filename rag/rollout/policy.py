"""The routing policy: everything a rollout config decides, built completely before it serves.

A :class:`RoutingPolicy` is immutable and built from one :class:`~rag.rollout.config.RolloutConfig` in one
call (:meth:`RoutingPolicy.build`): the profile limits of every profile (built-in defaults with the
config's overrides), the auto-fallback thresholds, the shadow sampler, and the config's own sections
(prices, budgets, flags, router). The watcher (:mod:`rag.rollout.watcher`) builds the next policy before
it swaps it in and holds the serving one in **one reference**, which every part of the routing state reads
at use. Invariant: a reload is all-or-nothing — if building any part fails, nothing of the new config
serves; once the reference is swapped, every part serves the new version.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from rag.rollout.config import Budgets, Prices, Profile, ProfileLimits, RolloutConfig, RouterSection
from rag.rollout.fallback import FallbackPolicy
from rag.rollout.flags import Flag
from rag.rollout.shadow import ShadowSampler


@dataclass(frozen=True, slots=True)
class RoutingPolicy:
    config: RolloutConfig
    version: str  # config.version(): the content hash
    profiles: Mapping[Profile, ProfileLimits]  # every profile, defaults with the config's overrides
    fallback: FallbackPolicy  # thresholds, relative to the request deadline
    sampler: ShadowSampler

    @classmethod
    def build(cls, config: RolloutConfig, *, deadline_s: float) -> RoutingPolicy:
        """The complete policy of ``config`` for requests whose deadline is ``deadline_s``; raises (a
        ``ValueError``) when a part cannot be built, before anything serves it."""
        return cls(
            config=config,
            version=config.version(),
            profiles=MappingProxyType({p: config.profile_limits(p) for p in Profile}),
            fallback=config.fallback.policy(timeout_s=deadline_s),
            sampler=ShadowSampler(config.shadow.rate),
        )

    def limits(self, profile: Profile) -> ProfileLimits:
        return self.profiles[profile]

    @property
    def prices(self) -> Prices:
        return self.config.prices

    @property
    def budgets(self) -> Budgets:
        return self.config.budgets

    @property
    def router(self) -> RouterSection:
        return self.config.router

    @property
    def flags(self) -> list[Flag]:
        return self.config.flags
