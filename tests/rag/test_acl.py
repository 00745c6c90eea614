"""The ACL vocabulary (rag.acl): entry and principal grammar with its bounds, the visibility rule, the
scope's cache digest and the per-tenant defaults."""

from __future__ import annotations

import random

import pytest

from rag.acl import (
    MAX_ACL_ENTRIES,
    MAX_GROUPS,
    MAX_PRINCIPAL_CHARS,
    AccessScope,
    AclDefault,
    AclError,
    Caller,
    check_acl,
    tenant_defaults,
)


def test_an_acl_is_sorted_deduplicated_bounded_and_never_empty() -> None:
    assert check_acl(["user:bob", "group:eng", "user:bob"]) == ("group:eng", "user:bob")
    assert check_acl([f"user:u{i}" for i in range(MAX_ACL_ENTRIES)])  # the limit itself is fine
    with pytest.raises(AclError, match=f"acl: at most {MAX_ACL_ENTRIES} entries") as too_many:
        check_acl([f"user:u{i}" for i in range(MAX_ACL_ENTRIES + 1)])
    assert too_many.value.field == "acl" and too_many.value.limit == MAX_ACL_ENTRIES
    with pytest.raises(AclError, match="empty ACL would hide"):
        check_acl([])
    for bad in (
        ["alice"],
        ["role:x"],
        ["user:"],
        ["user:a b"],
        ["user:a\n"],
        [1],
        "user:a",
        ["user:" + "a" * 129],
    ):
        with pytest.raises(AclError, match="acl"):
            check_acl(bad)


def test_the_principal_header_grammar_and_its_limits() -> None:
    assert Caller.parse("user:alice") == Caller("alice")
    alice = Caller.parse(" user:alice ; groups=eng, ops ")
    assert alice == Caller("alice", frozenset({"eng", "ops"}))
    assert alice.entries == {"user:alice", "group:eng", "group:ops"}
    assert str(alice) == "user:alice;groups=eng,ops" and Caller.parse(str(alice)) == alice
    assert Caller.parse("user:a.b@example.com;groups=x-1").user == "a.b@example.com"
    for bad in (
        "",
        "alice",
        "group:eng",
        "user:",
        "user:alice;",
        "user:alice;groups=",
        "user:alice;groups=a,,b",
        "user:alice;teams=a",
        "user:alice;groups=a;groups=b",
        "user:al ice",
        "user:alice\x00",
    ):
        with pytest.raises(AclError) as err:
            Caller.parse(bad)
        assert err.value.field == "X-RAG-Principal", bad
    groups = ",".join(f"g{i}" for i in range(MAX_GROUPS + 1))
    with pytest.raises(AclError, match=f"at most {MAX_GROUPS} groups") as many:
        Caller.parse(f"user:alice;groups={groups}")
    assert many.value.limit == MAX_GROUPS
    with pytest.raises(AclError, match=f"at most {MAX_PRINCIPAL_CHARS} characters"):
        Caller.parse("user:" + "a" * MAX_PRINCIPAL_CHARS)
    # the longest valid header fits the character limit
    longest = "user:" + "u" * 128 + ";groups=" + ",".join(f"{i:03d}" + "g" * 125 for i in range(MAX_GROUPS))
    assert len(Caller.parse(longest).groups) == MAX_GROUPS


def test_the_rule_against_a_naive_one() -> None:
    rng = random.Random(7)
    users, groups = [f"u{i}" for i in range(6)], [f"g{i}" for i in range(4)]
    for _ in range(2000):
        acl = tuple(
            sorted(
                {
                    rng.choice(["user:", "group:"]) + rng.choice(users + groups)
                    for _ in range(rng.randint(0, 3))
                }
            )
        )
        caller = None if rng.random() < 0.2 else Caller(rng.choice(users), frozenset(rng.sample(groups, 2)))
        default = rng.choice(list(AclDefault))
        scope = AccessScope.of(caller, default)
        if not acl:
            expected = default is AclDefault.PUBLIC
        else:
            expected = caller is not None and (
                f"user:{caller.user}" in acl or any(f"group:{g}" in acl for g in caller.groups)
            )
        assert scope.allows(acl) is expected, (acl, caller, default)


def test_an_anonymous_caller_sees_only_unlisted_documents_and_only_under_public() -> None:
    assert AccessScope.of(None, AclDefault.PUBLIC).allows(())
    assert not AccessScope.of(None, AclDefault.PUBLIC).allows(("user:alice",))
    assert not AccessScope.of(None, AclDefault.DENY).allows(())


def test_the_scope_key_is_the_entries_and_default_only() -> None:
    a = AccessScope.of(Caller("alice", frozenset({"eng", "ops"})), AclDefault.PUBLIC)
    same = AccessScope.of(Caller.parse("user:alice;groups=ops,eng"), AclDefault.PUBLIC)
    assert a.key == same.key
    assert a.key != AccessScope.of(Caller("alice", frozenset({"eng"})), AclDefault.PUBLIC).key
    assert a.key != AccessScope.of(Caller("alice", frozenset({"eng", "ops"})), AclDefault.DENY).key
    assert a.key != AccessScope.of(Caller("bob", frozenset({"eng", "ops"})), AclDefault.PUBLIC).key
    assert AccessScope.of(None, AclDefault.PUBLIC).key != AccessScope.of(None, AclDefault.DENY).key


def test_a_caller_within_its_binding() -> None:
    bound = Caller("alice", frozenset({"eng", "ops"}))
    assert Caller("alice").within(bound) and Caller("alice", frozenset({"ops"})).within(bound)
    assert not Caller("bob").within(bound)
    assert not Caller("alice", frozenset({"eng", "admin"})).within(bound)


def test_per_tenant_defaults() -> None:
    assert tenant_defaults("acme=deny, globex=public") == {
        "acme": AclDefault.DENY,
        "globex": AclDefault.PUBLIC,
    }
    assert tenant_defaults(None) == {} and tenant_defaults("") == {}
    with pytest.raises(ValueError, match="entry 1"):
        tenant_defaults("acme")
    with pytest.raises(ValueError, match=r"expected one of \['public', 'deny'\]"):
        tenant_defaults("acme=private")


def test_a_namespace_without_a_scope_keeps_the_digest_it_had_before_acls() -> None:
    """The default path's cache keys are unchanged: the digest of the four parts, as before."""
    import hashlib

    from rag.cache.keys import IndexIdentity, Namespace

    index = IndexIdentity.of("c", "v000001", {"x": 1})
    ns = Namespace.of("acme", index, "hash:64", {"plan": {"route": "hybrid"}, "filters": {}})
    raw = "\x1f".join(("acme", index.key, "hash:64", ns.params))
    assert ns.digest == hashlib.blake2b(raw.encode(), digest_size=12).hexdigest()
    scoped = Namespace.of("acme", index, "hash:64", {"plan": {"route": "hybrid"}, "filters": {}}, access="k")
    assert scoped.digest != ns.digest and scoped.exact_key("q") != ns.exact_key("q")
