"""The rollout configuration: prices, budgets, profile limits, flags, shadow traffic, auto-fallback and
the router. Hot-reloadable (see :mod:`rag.rollout.watcher`); every section has defaults, so an empty text
is a valid config. Unknown fields are rejected, so a typo fails with its path instead of being ignored.

Its sections *are* the runtime policies (the budget meter reads :class:`Budgets`, the router reads
:class:`ProfileLimits`): validated once, here, so a config that parses can be applied. The code tables
below (:data:`PROFILE_DEFAULTS`) hold defaults only; ``[profiles.<name>]`` lays its fields over them.

:meth:`RolloutConfig.parse_text` turns TOML or JSON into a config, or raises :class:`ConfigError` with
one line per problem: the field path (``budgets.tenants.acme.per_hour``), what was wrong, what is allowed,
and the value given. ``rag/rollout/example.toml`` shows every section.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import types
import typing
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from rag.errors import RagError
from rag.rollout.fallback import FallbackPolicy
from rag.rollout.flags import Flag
from rag.tenancy import TENANT_PATTERN

Format = Literal["toml", "json"]
OverBudget = Literal["cheap_plan", "reject"]  # what a tenant past its budget gets
TenantId = Annotated[str, Field(pattern=TENANT_PATTERN)]


class ConfigError(RagError, ValueError):
    """A rollout config that cannot be applied; the message says where and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Prices(_Section):
    """Unit prices for cost accounting. The defaults are illustrative (roughly a hosted small embedder,
    a hosted reranker, a small LLM and a cloud vCPU in 2024), not anyone's price list: set your own."""

    embed_per_1k_texts: float = Field(default=0.002, ge=0)
    rerank_per_1k_pairs: float = Field(default=0.02, ge=0)
    llm_per_1k_prompt_tokens: float = Field(default=0.15, ge=0)
    llm_per_1k_completion_tokens: float = Field(default=0.6, ge=0)
    cpu_per_core_hour: float = Field(default=0.04, ge=0)
    currency: str = Field(default="USD", pattern=r"^[A-Z]{3}$", description="ISO 4217 code")


class TenantBudget(_Section):
    per_hour: float | None = Field(default=None, ge=0, description="money per hour; None = unlimited")
    over_budget: OverBudget | None = Field(default=None, description="None = the global over_budget")


class Budgets(_Section):
    """The budget policy (:class:`rag.routing.budgets.BudgetMeter` reads it): money per rolling hour for the
    deployment and per tenant; past ``soft_fraction`` of a budget the router plans cheaper, past the budget
    a tenant gets ``over_budget``."""

    global_per_hour: float | None = Field(default=None, ge=0, description="money per hour for the deployment")
    # > 0: at 0 every query, even the first of the hour, would be "near the budget"
    soft_fraction: float = Field(
        default=0.8, gt=0, le=1, description="above this share, prefer cheaper plans"
    )
    over_budget: OverBudget = "cheap_plan"
    tenants: dict[TenantId, TenantBudget] = Field(default_factory=dict)

    def tenant_per_hour(self, tenant: str) -> float | None:
        budget = self.tenants.get(tenant)
        return budget.per_hour if budget else None

    def tenant_over_budget(self, tenant: str) -> OverBudget:
        budget = self.tenants.get(tenant)
        return budget.over_budget if budget and budget.over_budget else self.over_budget


class Profile(StrEnum):
    """A deployment's (``RAG_PROFILE``) or a request's trade-off; each has :class:`ProfileLimits`."""

    LATENCY = "latency"
    THROUGHPUT = "throughput"
    COST = "cost"
    BALANCED = "balanced"


class ProfileLimits(_Section):
    """What a profile allows a plan. A field left None has no say: no cap (the settings' value stands),
    multi-query and batching allowed. The same model is the built-in table (:data:`PROFILE_DEFAULTS`) and
    a ``[profiles.<name>]`` section, laid over it field by field (:meth:`over`). ``batching`` applies to
    the deployment's profile: it sets the micro-batching window of the model calls."""

    max_candidates: int | None = Field(default=None, ge=1)
    dims: Literal[64, 128, 256] | None = None  # Matryoshka prefetch dimension (rescored at full dimension)
    max_rerank_depth: int | None = Field(default=None, ge=0)
    multi_query: bool | None = None  # False: no decomposition / pseudo-relevance feedback
    batching: bool | None = None  # False: model calls do not wait for company (no micro-batching window)

    def over(self, base: ProfileLimits) -> ProfileLimits:
        """``base`` with every field this one sets (not None) replaced: an override laid over defaults."""
        return base.model_copy(update=self.model_dump(exclude_none=True))

    @property
    def allows_multi_query(self) -> bool:
        return self.multi_query is not False

    @property
    def allows_batching(self) -> bool:
        return self.batching is not False


# The defaults of ``[profiles.<name>]``. balanced: the router's plan within the configured limits; latency:
# a 64-d funnel, a shallow rerank, no multi-query, no batching wait; throughput: less model work per
# query, batched; cost: no cross-encoder, no multi-query.
PROFILE_DEFAULTS: Mapping[Profile, ProfileLimits] = MappingProxyType(
    {
        Profile.BALANCED: ProfileLimits(),
        Profile.LATENCY: ProfileLimits(
            max_candidates=50, dims=64, max_rerank_depth=20, multi_query=False, batching=False
        ),
        Profile.THROUGHPUT: ProfileLimits(max_candidates=50, dims=128, max_rerank_depth=10),
        Profile.COST: ProfileLimits(max_candidates=50, dims=64, max_rerank_depth=0, multi_query=False),
    }
)


class ShadowSection(_Section):
    rate: float = Field(default=0.0, ge=0, le=1, description="share of requests also run on the candidate")
    candidate: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="flag, pipeline or policy name"
    )


class FallbackSection(_Section):
    window_s: float = Field(default=300.0, gt=0)
    error_rate: float = Field(default=0.5, gt=0, le=1)
    timeout_rate: float = Field(default=0.3, gt=0, le=1)
    latency_ratio: float = Field(default=0.8, gt=0, description="of the request deadline")
    min_samples: int = Field(default=20, ge=1)

    def policy(self, timeout_s: float) -> FallbackPolicy:
        """The policy for requests whose deadline is ``timeout_s``."""
        return FallbackPolicy(timeout_s=timeout_s, **self.model_dump())


class RouterSection(_Section):
    policy: Literal["rules", "bandit"] = "rules"
    bandit_alpha: float = Field(default=0.5, ge=0, description="exploration bonus of the bandit")
    bandit_epsilon: float = Field(default=0.05, ge=0, le=1, description="share of random exploration")
    cost_weight: float = Field(
        default=1.0, ge=0, description="weight of cost against quality; 0 ignores cost"
    )


class RolloutConfig(_Section):
    prices: Prices = Prices()
    budgets: Budgets = Budgets()
    profiles: dict[Profile, ProfileLimits] = Field(default_factory=dict)
    flags: list[Flag] = Field(default_factory=list)
    shadow: ShadowSection = ShadowSection()
    fallback: FallbackSection = FallbackSection()
    router: RouterSection = RouterSection()

    @field_validator("flags")
    @classmethod
    def _unique_flag_names(cls, flags: list[Flag]) -> list[Flag]:
        names = [f.name for f in flags]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"flag names must be unique, repeated: {repeated}")
        return flags

    def flag(self, name: str) -> Flag | None:
        return next((f for f in self.flags if f.name == name), None)

    def profile_limits(self, profile: Profile) -> ProfileLimits:
        """``profile``'s limits: the built-in ones with this config's ``[profiles.<name>]`` laid over."""
        override = self.profiles.get(profile)
        defaults = PROFILE_DEFAULTS[profile]
        return override.over(defaults) if override is not None else defaults

    def version(self) -> str:
        """A short hash of the content (not the text: comments and key order do not change it)."""
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:12]

    @classmethod
    def load(cls, path: Path | None) -> RolloutConfig:
        """The rollout config file's contents (``RAG_ROLLOUT_CONFIG``; the defaults when there is none).
        ``.json`` is JSON, anything else TOML. A missing or invalid file raises (startup fails)."""
        if path is None:
            return cls()
        if not path.is_file():
            raise FileNotFoundError(f"RAG_ROLLOUT_CONFIG={str(path)!r} does not exist")
        return cls.parse_text(path.read_text(), "json" if path.suffix.lower() == ".json" else "toml")

    @classmethod
    def parse_text(cls, text: str, fmt: Format) -> RolloutConfig:
        """Parse and validate TOML or JSON; :class:`ConfigError` says what is wrong and where."""
        try:
            data = decode(text, fmt)
            if not isinstance(data, dict):
                raise ConfigError(f"rollout config must be a {fmt} table/object, got {type(data).__name__}")
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(describe_errors(exc)) from None
        except RecursionError:  # the parsers recurse per level: an admin's typo must not be a 500
            raise ConfigError(f"rollout config is nested too deeply to be a {fmt} config") from None


def decode(text: str, fmt: Format) -> Any:
    if fmt == "toml":
        try:
            return tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"rollout config is not valid TOML: {exc}") from None
    if fmt == "json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"rollout config is not valid JSON: {exc}") from None
    raise ConfigError(f"unknown format {fmt!r}; allowed: 'toml', 'json'")


# -- readable validation errors --------------------------------------------------------------------


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("flags", 0, "name")`` -> ``flags[0].name``; a dict key error reads ``profiles.fast (key)``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part == "[key]":
            path += " (key)"
        else:
            path += f".{part}" if path else str(part)
    return path or "(top level)"


def _unwrap(annotation: Any) -> Any:
    """``X | None`` -> X (the first model or container among the union's members)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return members[0] if members else annotation
    return annotation


def model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The model class that holds the location ``loc`` inside a :class:`RolloutConfig`, or None."""
    current: Any = RolloutConfig
    for part in loc:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = current.model_fields.get(str(part))
            if field is None:
                return None
            current = field.annotation
        elif typing.get_origin(current) is list:
            current = typing.get_args(current)[0]
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def describe_error(error: Any) -> str:
    """One pydantic error as ``path: what is wrong / allowed (got value)``."""
    loc = tuple(error["loc"])
    path = field_path(loc)
    if error["type"] == "extra_forbidden":
        parent = model_at(loc[:-1])
        allowed = f"; allowed: {', '.join(parent.model_fields)}" if parent else ""
        return f"{path}: unknown field{allowed}"
    message = str(error["msg"]).removeprefix("Value error, ")
    shows_value = error["type"] not in ("missing", "value_error")  # our own messages quote the value
    got = f" (got {_shown(error.get('input'))})" if shows_value else ""
    return f"{path}: {message}{got}"


def describe_errors(exc: ValidationError) -> str:
    lines = [describe_error(e) for e in exc.errors()]
    head = f"invalid rollout config ({len(lines)} problem{'s' if len(lines) != 1 else ''})"
    return head + ":\n  " + "\n  ".join(lines)
