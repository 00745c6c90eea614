"""What identifies a cached answer (rag.cache.keys): equal inputs give equal keys, and any part that
changes the answer — tenant, index identity, embedding model, plan, filters — gives a different namespace
digest, so a cached answer is never found under another tenant, version, plan or filter. Within a
namespace, the exact (L1) key adds the query text normalised for case, spacing and trailing punctuation.

The tests go through :func:`namespace` only, so a change of the constructor is adapted in one place."""

from __future__ import annotations

from typing import Any

import pytest

from rag.cache.keys import IndexIdentity, Namespace, normalize_query

PLAN = {"retrievers": ["bm25", "dense"], "top_k": 10, "rerank_depth": 20, "dims": None}
FILTERS = {"lang": "en", "year": [2019, 2020]}
MANIFEST = {"version": "v000001", "created_at": "2024-05-01T12:00:00Z", "documents": 5183}
DEFAULTS: dict[str, Any] = {
    "tenant": "acme",
    "collection": "scifact",
    "version": "v000001",
    "manifest": MANIFEST,
    "model": "hash:64",
    "params": {"plan": PLAN, "filters": FILTERS},
}


def identity(**changes: Any) -> IndexIdentity:
    parts = {**DEFAULTS, **changes}
    return IndexIdentity.of(parts["collection"], parts["version"], parts["manifest"])


def namespace(**changes: Any) -> Namespace:
    parts = {**DEFAULTS, **changes}
    return Namespace.of(parts["tenant"], identity(**changes), parts["model"], parts["params"])


def test_equal_inputs_give_equal_namespaces_and_keys() -> None:
    a, b = namespace(), namespace()
    assert a == b and hash(a) == hash(b)
    assert a.digest == b.digest
    assert a.exact_key("which animals hunt mice") == b.exact_key("which animals hunt mice")


def test_the_order_of_parameters_does_not_matter() -> None:
    """Parameters are canonical JSON: the same plan and filters written in another order are the same
    namespace (a dict built in another order by another code path still finds the entry)."""
    reordered = {
        "filters": {"year": [2019, 2020], "lang": "en"},
        "plan": dict(reversed(list(PLAN.items()))),
    }
    assert namespace(params=reordered).digest == namespace().digest


@pytest.mark.parametrize(
    "changes",
    [
        {"tenant": "globex"},
        {"version": "v000002"},
        {"collection": "nfcorpus"},  # another collection whose first version has the same name
        {"manifest": {**MANIFEST, "created_at": "2024-05-02T08:00:00Z"}},  # same name, another data dir
        {"model": "hash:128"},
        {"params": {"plan": {**PLAN, "rerank_depth": 10}, "filters": FILTERS}},
        {"params": {"plan": {**PLAN, "retrievers": ["bm25"]}, "filters": FILTERS}},
        {"params": {"plan": PLAN, "filters": {"lang": "fr", "year": [2019, 2020]}}},
        {"params": {"plan": PLAN, "filters": {"lang": "en"}}},
        {"params": {"plan": PLAN, "filters": {"lang": "en", "year": [2020, 2019]}}},  # list order counts
        {"params": {"plan": PLAN, "filters": {}}},
        {"params": {"plan": PLAN}},
    ],
    ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())[:60],
)
def test_any_differing_part_gives_a_different_namespace(changes: dict[str, Any]) -> None:
    base, other = namespace(), namespace(**changes)
    assert other != base
    assert other.digest != base.digest
    assert other.exact_key("which animals hunt mice") != base.exact_key("which animals hunt mice")


def test_parts_do_not_run_into_each_other() -> None:
    """The parts are joined with a separator: moving characters from one part to the next is another
    namespace (``"ab" + "c"`` is not ``"a" + "bc"``)."""
    assert namespace(tenant="acme1", model="m").digest != namespace(tenant="acme", model="1m").digest
    assert identity(collection="ab", version="c").key != identity(collection="a", version="bc").key


# -- the index identity ----------------------------------------------------------------------------------
def test_equal_indexes_have_equal_identities() -> None:
    """Replicas of one deployment serve copies of one published version: one identity, shared answers.
    The manifest is hashed as canonical JSON (its key order does not matter)."""
    assert identity() == identity()
    assert identity(manifest=dict(reversed(list(MANIFEST.items())))) == identity()
    assert identity().version == "v000001"  # what answers report as index_version


@pytest.mark.parametrize(
    "changes",
    [
        {"collection": "nfcorpus"},
        {"version": "v000002"},
        {"manifest": {**MANIFEST, "documents": 5184}},
    ],
    ids=["collection", "version", "manifest"],
)
def test_any_differing_part_gives_another_index(changes: dict[str, Any]) -> None:
    assert identity(**changes) != identity()
    assert identity(**changes).key != identity().key


def test_two_collections_sharing_one_redis_never_share_keys() -> None:
    """The defect of the per-folder counter: every data dir's first version is ``v000001``. With the
    collection and the manifest in the identity, equal version names no longer give equal keys."""
    first = {"version": "v000001", "collection": "a"}
    second = {"version": "v000001", "collection": "b"}
    a = namespace(collection="a", manifest=first)
    b = namespace(collection="b", manifest=second)
    assert a.digest != b.digest
    same_name_other_dir = namespace(collection="a", manifest={**first, "created_at": "later"})
    assert same_name_other_dir.digest != a.digest


def test_different_tenants_never_share_a_key() -> None:
    """Whatever else is equal — same index, plan, filters and query text — two tenants' keys differ."""
    tenants = ["acme", "globex", "Acme", "acme ", "", "a\x1fb", "tenant-" + "x" * 200]
    queries = ["which animals hunt mice", "", "?", "ACME secret plan!"]
    keys = {(t, q): namespace(tenant=t).exact_key(q) for t in tenants for q in queries}
    for q in queries:
        per_tenant = {keys[(t, q)] for t in tenants}
        assert len(per_tenant) == len(tenants), f"two tenants share a key for {q!r}"


# -- the exact key: normalisation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "variant",
    [
        "which animals hunt mice",
        "Which Animals Hunt Mice",
        "WHICH ANIMALS HUNT MICE",
        "  which   animals\thunt\nmice  ",
        "which animals hunt mice?",
        "which animals hunt mice ?!",
        "which animals hunt mice...",
        "which animals hunt mice. ? ",
        "ｗｈｉｃｈ animals hunt mice",  # full-width letters: NFKC
        "which\u00a0animals hunt mice",  # a no-break space
    ],
)
def test_case_spacing_and_trailing_punctuation_do_not_change_the_exact_key(variant: str) -> None:
    ns = namespace()
    assert normalize_query(variant) == "which animals hunt mice"
    assert ns.exact_key(variant) == ns.exact_key("which animals hunt mice")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("which animals hunt mice", "which animal hunts mice"),
        ("which animals hunt mice", "which animals hunt mice at night"),
        ("which animals hunt mice", "which, animals hunt mice"),  # punctuation inside the text counts
        ("is it safe?", "is it safe? no"),
        ("c++", "c"),  # only ?!. are trailing punctuation
        ("mice!", "mice!x"),
    ],
)
def test_what_normalisation_keeps_apart(a: str, b: str) -> None:
    ns = namespace()
    assert ns.exact_key(a) != ns.exact_key(b)


def test_normalisation_is_idempotent_and_linear_on_long_trailing_runs() -> None:
    """Normalising twice is normalising once; a long run of trailing ``?`` followed by a letter is
    handled in one pass (the regex it replaced was quadratic on it)."""
    for text in ["  Which Animals?  ", "mice . ! ?", "a" + "?" * 10_000, "?" * 100_000 + "a"]:
        once = normalize_query(text)
        assert normalize_query(once) == once
    assert normalize_query("?" * 100_000 + "a") == "?" * 100_000 + "a"
    assert normalize_query("a" + " ?" * 100_000) == "a"
