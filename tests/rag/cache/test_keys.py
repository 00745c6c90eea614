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
DEFAULTS: dict[str, Any] = {
    "tenant": "acme",
    "index_version": "v000001",
    "model": "hash:64",
    "params": {"plan": PLAN, "filters": FILTERS},
}


def namespace(**changes: Any) -> Namespace:
    parts = {**DEFAULTS, **changes}
    index = IndexIdentity.of("svc", parts["index_version"], {"version": parts["index_version"]})
    return Namespace.of(parts["tenant"], index, parts["model"], parts["params"])


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
        {"index_version": "v000002"},
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
    assert (
        namespace(tenant="acme1", index_version="v").digest
        != namespace(tenant="acme", index_version="1v").digest
    )
    assert namespace(index_version="v1", model="m").digest != namespace(index_version="v", model="1m").digest


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


# -- the index identity ----------------------------------------------------------------------------------
MANIFEST = {"version": "v000001", "collection": "svc", "created_at": "2025-01-01T00:00:00+00:00", "docs": 3}


@pytest.mark.parametrize(
    ("collection", "manifest"),
    [
        ("other", MANIFEST),  # another collection on the same Redis
        ("svc", {**MANIFEST, "created_at": "2025-01-02T00:00:00+00:00"}),  # another data dir's v000001
        ("svc", {**MANIFEST, "docs": 4}),
    ],
)
def test_the_index_identity_tells_apart_equal_version_names(
    collection: str, manifest: dict[str, Any]
) -> None:
    """``v000001`` is a per-folder counter: two collections, or two data dirs, both publish it. The
    collection and the manifest's hash keep their namespaces apart."""
    base = IndexIdentity.of("svc", "v000001", MANIFEST)
    other = IndexIdentity.of(collection, "v000001", manifest)
    assert other.version == base.version and other.key != base.key
    tenant, model, params = DEFAULTS["tenant"], DEFAULTS["model"], DEFAULTS["params"]
    ours, theirs = Namespace.of(tenant, base, model, params), Namespace.of(tenant, other, model, params)
    assert theirs.digest != ours.digest and theirs.exact_key("mice") != ours.exact_key("mice")


def test_a_copy_of_the_same_published_version_is_the_same_index() -> None:
    """Replicas of one deployment serve copies of one published version: the same identity, whatever
    the key order of the manifest, so they share their cached answers."""
    copy = dict(reversed(list(MANIFEST.items())))
    assert IndexIdentity.of("svc", "v000001", copy) == IndexIdentity.of("svc", "v000001", MANIFEST)
