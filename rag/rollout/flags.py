"""Feature flags: a kill switch, a percentage rollout, an allowlist and a denylist, and A/B variants.

Every unit (a tenant, or a session) gets a **bucket** in ``[0, 10000)`` from
``sha256("<flag name>:<unit id>")``: the same on every replica and after every restart (never Python's
salted ``hash()``), and independent between flags, so two flags at 10 % do not hit the same tenants.

**Monotone rollout.** A flag at ``rollout_percent = p`` turns on the units whose bucket is below
``p * 100`` (a prefix of the bucket range). Raising ``p`` only extends the prefix: everyone who was in
stays in. Inside the rolled-out share the variant is picked by :func:`variant_point`, the bucket's four
decimal digits read backwards (``0123 -> 0.3210``; van der Corput's sequence). It depends on the bucket
alone, not on ``p``, so a unit keeps its variant when ``p`` moves; and the reversed digits of any prefix
``[0, n)`` of buckets spread evenly over ``[0, 1)``, so each variant holds its weight's share of the
rolled-out buckets at every percentage (off by a few buckets at most), not only at 100 %.

Precedence, first match wins: ``disabled`` (the kill switch: off for everyone, the allowlist included),
``denylist``, ``allowlist`` (always the first variant that is not ``control``), then ``rollout`` or
``holdout`` by bucket. ``control`` is the baseline: what a unit gets when it is not rolled out. It may
also be listed in ``variants`` to keep an in-experiment control group inside the rolled-out share.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from rag.tenancy import TENANT_PATTERN

BUCKETS = 10_000
CONTROL = "control"
NAME_PATTERN = r"^[a-z0-9_.-]{1,64}$"
_NAME_RE = re.compile(NAME_PATTERN)
_TENANT_RE = re.compile(TENANT_PATTERN)

Reason = Literal["disabled", "denylist", "allowlist", "rollout", "holdout"]


def bucket(flag_name: str, unit_id: str) -> int:
    """The unit's bucket in ``[0, 10000)`` for this flag: the first 8 bytes of
    ``sha256("<flag_name>:<unit_id>")`` as a big-endian integer, modulo 10000 (bias below 1e-15)."""
    digest = hashlib.sha256(f"{flag_name}:{unit_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def rollout_threshold(rollout_percent: float) -> int:
    """Buckets below this are rolled out: ``rollout_percent`` of 10000, rounded (0.01 % steps)."""
    return round(rollout_percent * BUCKETS / 100)


def variant_point(bucket_value: int) -> float:
    """Where a bucket falls in ``[0, 1)`` for the variant split: its four digits reversed
    (``1234 -> 0.4321``). Evenly spread over every prefix of the bucket range; see the module doc."""
    digits = f"{bucket_value:04d}"
    return int(digits[::-1]) / BUCKETS


def pick_variant(variants: dict[str, float], point: float) -> str:
    """The variant whose share of ``[0, 1)`` holds ``point``; shares are the weights normalised, laid
    out in the dict's order."""
    total = sum(variants.values())
    upper = 0.0
    for name, weight in variants.items():
        upper += weight / total
        if point < upper:
            return name
    return next(reversed(variants))  # point rounding up against 1.0


class Flag(BaseModel):
    """One flag. Validation errors name the field and what is allowed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field(pattern=NAME_PATTERN, description="lowercase letters, digits, '_', '.', '-'")
    enabled: bool = False
    rollout_percent: float = Field(default=0.0, ge=0.0, le=100.0)
    allowlist: list[str] = Field(default_factory=list, description="tenants that always get the flag")
    denylist: list[str] = Field(default_factory=list, description="tenants that never get it")
    unit: Literal["tenant", "session"] = "tenant"
    variants: dict[str, float] = Field(default_factory=lambda: {"on": 1.0})

    @field_validator("allowlist", "denylist")
    @classmethod
    def _tenants_valid(cls, tenants: list[str]) -> list[str]:
        bad = [t for t in tenants if not _TENANT_RE.fullmatch(t)]
        if bad:
            raise ValueError(f"tenant ids must match {TENANT_PATTERN}, got {bad}")
        return tenants

    @field_validator("variants")
    @classmethod
    def _variants_valid(cls, variants: dict[str, float]) -> dict[str, float]:
        if not variants:
            raise ValueError('needs at least one variant, e.g. {"on": 1.0}')
        bad_names = [name for name in variants if not _NAME_RE.fullmatch(name)]
        if bad_names:
            raise ValueError(f"variant names must match {NAME_PATTERN}, got {bad_names}")
        bad_weights = {n: w for n, w in variants.items() if not (math.isfinite(w) and w > 0)}
        if bad_weights:
            raise ValueError(f"variant weights must be finite and > 0, got {bad_weights}")
        if all(name == CONTROL for name in variants):
            raise ValueError(f"needs a variant other than {CONTROL!r} (the baseline)")
        return variants

    @model_validator(mode="after")
    def _lists_disjoint(self) -> Flag:
        both = sorted(set(self.allowlist) & set(self.denylist))
        if both:
            raise ValueError(f"tenants both in allowlist and denylist: {both}")
        return self

    @property
    def first_variant(self) -> str:
        """The variant the allowlist gets: the first one that is not ``control``."""
        return next(name for name in self.variants if name != CONTROL)


@dataclass(frozen=True, slots=True)
class Assignment:
    flag: str
    variant: str  # "control" when not rolled out
    reason: Reason

    @property
    def on(self) -> bool:
        """True when the unit runs something other than the baseline."""
        return self.variant != CONTROL


def unit_id(flag: Flag, tenant: str, session_id: str | None) -> str:
    """The id the bucket hashes: the session when the flag is per session and there is one, else the
    tenant."""
    return session_id if flag.unit == "session" and session_id else tenant


def assign(flag: Flag, tenant: str, session_id: str | None = None) -> Assignment:
    """The variant this tenant (or session) gets, and why."""
    if not flag.enabled:
        return Assignment(flag.name, CONTROL, "disabled")
    if tenant in flag.denylist:
        return Assignment(flag.name, CONTROL, "denylist")
    if tenant in flag.allowlist:
        return Assignment(flag.name, flag.first_variant, "allowlist")
    b = bucket(flag.name, unit_id(flag, tenant, session_id))
    if b >= rollout_threshold(flag.rollout_percent):
        return Assignment(flag.name, CONTROL, "holdout")
    return Assignment(flag.name, pick_variant(flag.variants, variant_point(b)), "rollout")


def assign_all(flags: Iterable[Flag], tenant: str, session_id: str | None = None) -> dict[str, Assignment]:
    """Every flag's assignment for one request, keyed by flag name."""
    return {flag.name: assign(flag, tenant, session_id) for flag in flags}
