"""Flags: stable buckets, uniform spread, monotone rollout, the precedence of the reasons, and the A/B
split inside the rolled-out share."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest
from pydantic import ValidationError

from rag.rollout.flags import (
    CONTROL,
    Flag,
    assign,
    assign_all,
    bucket,
    pick_variant,
    rollout_threshold,
    variant_point,
)

TENANTS = [f"tenant-{i}" for i in range(20_000)]


def test_bucket_values_are_fixed_so_a_change_of_hashing_breaks_this_test() -> None:
    # sha256("rerank.v2:acme")[:8] big-endian % 10000, and so on: the same on every replica and restart
    assert bucket("rerank.v2", "acme") == 1327
    assert bucket("rerank.v2", "globex") == 9782
    assert bucket("fusion-experiment", "acme") == 8315
    assert bucket("fusion-experiment", "session-42") == 7897


def test_bucket_is_the_same_in_another_process_with_another_hash_seed() -> None:
    code = "from rag.rollout.flags import bucket; print(bucket('rerank.v2', 'acme'))"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONHASHSEED": "12345", "PATH": ""},
    )
    assert out.stdout.strip() == "1327"


def test_buckets_spread_uniformly_over_many_ids() -> None:
    deciles = Counter(bucket("some.flag", t) // 1000 for t in TENANTS)
    assert set(deciles) == set(range(10))
    expected = len(TENANTS) / 10
    assert all(abs(n - expected) < 0.06 * expected for n in deciles.values()), deciles


def test_buckets_of_two_flags_are_independent() -> None:
    in_a = {t for t in TENANTS if bucket("flag.a", t) < 1000}
    in_b = {t for t in TENANTS if bucket("flag.b", t) < 1000}
    assert abs(len(in_a & in_b) - len(TENANTS) / 100) < 60  # 10 % of 10 %, not the same tenants


def test_rollout_is_monotone_and_keeps_each_units_variant() -> None:
    variants = {"a": 1.0, "b": 2.0}
    before: dict[str, str] = {}
    for percent in (0.5, 1, 10, 20, 55.55, 100):
        flag = Flag(name="exp", enabled=True, rollout_percent=percent, variants=variants)
        now = {t: a.variant for t in TENANTS[:5000] if (a := assign(flag, t)).reason == "rollout"}
        assert before.items() <= now.items(), f"someone left or changed variant at {percent} %"
        assert abs(len(now) / 5000 - percent / 100) < 0.02
        before = now
    assert len(before) == 5000


def test_rollout_percent_edges() -> None:
    assert rollout_threshold(0) == 0 and rollout_threshold(100) == 10_000 and rollout_threshold(0.01) == 1
    off = Flag(name="f", enabled=True, rollout_percent=0)
    on = Flag(name="f", enabled=True, rollout_percent=100)
    assert all(assign(off, t).reason == "holdout" for t in TENANTS[:500])
    assert all(assign(on, t).variant == "on" for t in TENANTS[:500])


def test_reasons_and_their_precedence() -> None:
    flag = Flag(name="f", enabled=True, rollout_percent=100, allowlist=["vip"], denylist=["banned"])
    assert assign(flag, "banned").variant == CONTROL and assign(flag, "banned").reason == "denylist"
    assert assign(flag, "vip").reason == "allowlist" and assign(flag, "vip").on
    assert assign(flag, "someone").reason == "rollout"
    disabled = flag.model_copy(update={"enabled": False})
    assert {assign(disabled, t).reason for t in ("vip", "banned", "someone")} == {"disabled"}
    nobody = Flag(name="f", enabled=True, rollout_percent=0, allowlist=["vip"])
    assert assign(nobody, "vip").reason == "allowlist"
    assert assign(nobody, "someone") == assign(nobody, "someone")
    assert assign(nobody, "someone").reason == "holdout" and not assign(nobody, "someone").on


def test_allowlist_gets_the_first_variant_that_is_not_control() -> None:
    flag = Flag(name="f", enabled=True, allowlist=["vip"], variants={"control": 1, "new": 1, "newer": 1})
    assert assign(flag, "vip").variant == "new"


def test_variant_split_follows_the_weights() -> None:
    flag = Flag(name="ab", enabled=True, rollout_percent=30, variants={"a": 1, "b": 1, "c": 2})
    counts = Counter(assign(flag, t).variant for t in TENANTS)
    rolled = len(TENANTS) - counts[CONTROL]
    assert abs(rolled / len(TENANTS) - 0.3) < 0.015
    for name, share in {"a": 0.25, "b": 0.25, "c": 0.5}.items():
        assert abs(counts[name] / rolled - share) < 0.03, counts


def test_the_variant_split_of_buckets_is_even_at_every_prefix() -> None:
    weights = {"a": 1.0, "b": 1.0, "c": 2.0}
    for n in (10, 40, 137, 1000, 2345, 10_000):
        counts = Counter(pick_variant(weights, variant_point(b)) for b in range(n))
        assert all(abs(counts[v] - n * w / 4) <= 8 for v, w in weights.items()), (n, counts)


def test_variant_point_reverses_the_digits() -> None:
    assert variant_point(1234) == 0.4321 and variant_point(7) == 0.7 and variant_point(0) == 0.0


def test_session_unit_hashes_the_session_and_falls_back_to_the_tenant() -> None:
    flag = Flag(name="f", enabled=True, rollout_percent=50, unit="session")
    sessions = Counter(assign(flag, "acme", f"s{i}").reason for i in range(2000))
    assert 800 < sessions["rollout"] < 1200  # one tenant, sessions on both sides
    assert assign(flag, "acme", None) == assign(flag.model_copy(update={"unit": "tenant"}), "acme")


def test_assign_all_keys_by_flag_name() -> None:
    flags = [Flag(name="a", enabled=True, rollout_percent=100), Flag(name="b")]
    result = assign_all(flags, "acme", "s1")
    assert {k: (v.variant, v.reason) for k, v in result.items()} == {
        "a": ("on", "rollout"),
        "b": ("control", "disabled"),
    }


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"name": "Bad Name"}, "name"),
        ({"name": "f", "rollout_percent": 101}, "rollout_percent"),
        ({"name": "f", "rollout_percent": -1}, "rollout_percent"),
        ({"name": "f", "variants": {"on": 0}}, "weights must be finite and > 0"),
        ({"name": "f", "variants": {"on": -1}}, "weights must be finite and > 0"),
        ({"name": "f", "variants": {}}, "at least one variant"),
        ({"name": "f", "variants": {"control": 1}}, "other than 'control'"),
        ({"name": "f", "variants": {"Big": 1}}, "variant names must match"),
        ({"name": "f", "allowlist": ["a"], "denylist": ["a"]}, "both in allowlist and denylist"),
        ({"name": "f", "allowlist": ["Not A Tenant"]}, "tenant ids must match"),
        ({"name": "f", "unit": "user"}, "'tenant' or 'session'"),
        ({"name": "f", "rollout": 10}, "rollout"),
    ],
)
def test_invalid_flags_are_rejected_with_a_clear_message(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        Flag.model_validate(fields)
    assert fragment in str(info.value)
