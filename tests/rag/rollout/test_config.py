"""The rollout config: valid TOML and JSON (the shipped example included), defaults, and every kind of
invalid input rejected with a message naming the field path and what is allowed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.rollout.config import ConfigError, Format, RolloutConfig, field_path
from rag.rollout.fallback import FallbackPolicy

EXAMPLE = Path(__file__).resolve().parents[3] / "rag" / "rollout" / "example.toml"


def test_the_shipped_example_parses_and_exercises_every_section() -> None:
    config = RolloutConfig.parse_text(EXAMPLE.read_text(), "toml")
    assert set(config.model_fields_set) == set(RolloutConfig.model_fields)
    assert set(config.profiles) == {"latency", "throughput", "cost", "balanced"}
    assert config.budgets.tenant_over_budget("globex") == "reject"
    assert config.budgets.tenant_over_budget("acme") == "cheap_plan"  # inherited
    assert config.budgets.tenant_per_hour("acme") == 1.0 and config.budgets.tenant_per_hour("x") is None
    assert config.flag("adaptive_rerank") is not None and config.flag("nope") is None
    assert config.shadow.candidate == "adaptive_rerank"


def test_an_empty_text_is_the_defaults() -> None:
    config = RolloutConfig.parse_text("", "toml")
    assert config == RolloutConfig()
    assert config.prices.cpu_per_core_hour == 0.04 and config.prices.currency == "USD"
    assert config.budgets.global_per_hour is None and config.budgets.over_budget == "cheap_plan"
    assert config.router.policy == "rules" and config.shadow.rate == 0.0 and config.flags == []
    assert config.fallback.policy(timeout_s=2.0) == FallbackPolicy(timeout_s=2.0)


def test_json_and_toml_of_the_same_content_have_the_same_version() -> None:
    toml_text = EXAMPLE.read_text()
    from_toml = RolloutConfig.parse_text(toml_text, "toml")
    from_json = RolloutConfig.parse_text(json.dumps(from_toml.model_dump(mode="json")), "json")
    assert from_json == from_toml and from_json.version() == from_toml.version()
    commented = RolloutConfig.parse_text("# a comment\n" + toml_text, "toml")
    assert commented.version() == from_toml.version()  # the content is hashed, not the text
    assert RolloutConfig.parse_text('{"shadow": {"rate": 0.5}}', "json").version() != from_toml.version()
    assert len(from_toml.version()) == 12


def test_a_json_example() -> None:
    text = json.dumps(
        {
            "budgets": {"global_per_hour": 10, "tenants": {"acme": {"per_hour": 2, "over_budget": "reject"}}},
            "profiles": {"cost": {"dims": 64, "max_rerank_depth": 0}},
            "flags": [{"name": "ab", "enabled": True, "rollout_percent": 25, "variants": {"x": 1, "y": 3}}],
            "router": {"policy": "bandit", "bandit_epsilon": 0.1, "cost_weight": 0},
        }
    )
    config = RolloutConfig.parse_text(text, "json")
    assert config.profiles["cost"].dims == 64 and config.profiles["cost"].max_candidates is None
    assert config.flags[0].variants == {"x": 1.0, "y": 3.0} and config.router.policy == "bandit"


INVALID = [
    (
        "[prices]\nembed_per_1k_text = 1",
        "prices.embed_per_1k_text: unknown field; allowed: embed_per_1k_texts",
    ),
    (
        "[prices]\ncpu_per_core_hour = -0.1",
        "prices.cpu_per_core_hour: Input should be greater than or equal to 0",
    ),
    ('[prices]\ncurrency = "usd"', "prices.currency: String should match pattern"),
    (
        "[budgets]\nsoft_fraction = 1.5",
        "budgets.soft_fraction: Input should be less than or equal to 1 (got 1.5)",
    ),
    ('[budgets]\nover_budget = "drop"', "budgets.over_budget: Input should be 'cheap_plan' or 'reject'"),
    ("[budgets.tenants.acme]\nper_hour = -1", "budgets.tenants.acme.per_hour: Input should be greater than"),
    (
        "[budgets.tenants.acme]\nper_houre = 1",
        "budgets.tenants.acme.per_houre: unknown field; allowed: per_hour",
    ),
    ("[budgets.tenants.Acme]\nper_hour = 1", "budgets.tenants.Acme (key): String should match pattern"),
    ("[profiles.fast]\ndims = 64", "profiles.fast (key): Input should be 'latency', 'throughput'"),
    ("[profiles.latency]\ndims = 100", "profiles.latency.dims: Input should be 64, 128 or 256 (got 100)"),
    (
        "[profiles.latency]\nmax_candidates = 0",
        "profiles.latency.max_candidates: Input should be greater than",
    ),
    ("[profiles.cost]\nrerank = false", "profiles.cost.rerank: unknown field; allowed: max_candidates, dims"),
    ('[[flags]]\nname = "Rerank V2"', "flags[0].name: String should match pattern '^[a-z0-9_.-]{1,64}$'"),
    ("[[flags]]\nenabled = true", "flags[0].name: Field required"),
    ('[[flags]]\nname = "a"\nrollout_percent = 150', "flags[0].rollout_percent: Input should be less than"),
    ('[[flags]]\nname = "a"\nvariants = { on = 0 }', "flags[0].variants: variant weights must be finite"),
    ('[[flags]]\nname = "a"\n[[flags]]\nname = "a"', "flags: flag names must be unique, repeated: ['a']"),
    (
        '[[flags]]\nname = "a"\n[[flags]]\nname = "b"\npercent = 5',
        "flags[1].percent: unknown field; allowed: name",
    ),
    ("[budgets]\nsoft_fraction = 0", "budgets.soft_fraction: Input should be greater than 0 (got 0)"),
    (
        "[budgets]\nglobal_per_hour = -1",
        "budgets.global_per_hour: Input should be greater than or equal to 0",
    ),
    ("[shadow]\nrate = -0.1", "shadow.rate: Input should be greater than or equal to 0"),
    ('[shadow]\ncandidate = "a b"', "shadow.candidate: String should match pattern"),
    ("[fallback]\nerror_rate = 0", "fallback.error_rate: Input should be greater than 0"),
    ("[fallback]\nmin_samples = 0", "fallback.min_samples: Input should be greater than or equal to 1"),
    ('[router]\npolicy = "greedy"', "router.policy: Input should be 'rules' or 'bandit' (got \"greedy\")"),
    ("[router]\nbandit_epsilon = 2", "router.bandit_epsilon: Input should be less than or equal to 1"),
    ("[routr]\npolicy = 'rules'", "routr: unknown field; allowed: prices, budgets, profiles, flags, shadow"),
    ("[prices\n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_invalid_input_is_rejected_with_the_field_path(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        RolloutConfig.parse_text(text, "toml")
    assert message in str(info.value)


def test_every_problem_is_listed_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        RolloutConfig.parse_text("[shadow]\nrate = 2\n[router]\ncost_weight = -1\n", "toml")
    assert str(info.value).splitlines() == [
        "invalid rollout config (2 problems):",
        "  shadow.rate: Input should be less than or equal to 1 (got 2)",
        "  router.cost_weight: Input should be greater than or equal to 0 (got -1)",
    ]


def test_bad_json_and_formats() -> None:
    with pytest.raises(ConfigError, match="not valid JSON"):
        RolloutConfig.parse_text("{", "json")
    with pytest.raises(ConfigError, match="must be a json table/object, got list"):
        RolloutConfig.parse_text("[]", "json")
    with pytest.raises(ConfigError, match="unknown format 'yaml'; allowed: 'toml', 'json'"):
        RolloutConfig.parse_text("", "yaml")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"shadow.rate: Input should be a finite number"):
        RolloutConfig.parse_text('{"shadow": {"rate": NaN}}', "json")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_field_path() -> None:
    assert field_path(("flags", 0, "name")) == "flags[0].name"
    assert field_path(("profiles", "fast", "[key]")) == "profiles.fast (key)"
    assert field_path(()) == "(top level)"


@pytest.mark.parametrize(
    ("text", "fmt"),
    [
        ('{"flags": ' + "[" * 50_000 + "]" * 50_000 + "}", "json"),
        ("flags = " + "[" * 50_000 + "]" * 50_000, "toml"),
    ],
    ids=["json", "toml"],
)
def test_a_config_nested_too_deeply_is_a_config_error_not_a_crash(text: str, fmt: Format) -> None:
    with pytest.raises(ConfigError, match="nested too deeply"):
        RolloutConfig.parse_text(text, fmt)
