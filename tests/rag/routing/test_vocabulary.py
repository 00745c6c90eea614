"""Per-tenant vocabulary statistics: equal to a naive count over the tenant's own chunks, blind to every
other tenant's chunks."""

from __future__ import annotations

import math
import random

import pytest

from rag.bm25.index import TermMatrix
from rag.index.snapshot import ChunkRecord, IndexSnapshot
from rag.routing.vocabulary import build_vocabularies, tenant_idf
from rag.text.analyzer import Analyzer

TENANTS = ("acme", "globex", "")


def corpus(seed: int = 0, n: int = 300) -> tuple[list[list[str]], list[str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(60)]
    docs = [[rng.choice(words[: rng.randint(5, 60)]) for _ in range(rng.randint(1, 12))] for _ in range(n)]
    return docs, [rng.choice(TENANTS) for _ in range(n)]


def test_tenant_document_frequencies_equal_a_naive_count_over_its_own_chunks() -> None:
    docs, tenants = corpus()
    terms = TermMatrix.empty().append(docs)
    vocab = build_vocabularies(terms.tf, tenants)
    for tenant in TENANTS:
        own = [set(d) for d, t in zip(docs, tenants, strict=True) if t == tenant]
        assert vocab[tenant].n_docs == len(own)
        for term, term_id in terms.term_ids.items():
            assert vocab[tenant].document_frequency(term_id) == sum(term in d for d in own)


def test_a_term_only_in_another_tenants_chunks_is_unknown_to_a_tenant() -> None:
    analyzer = Analyzer()
    texts = {"acme": ["cats hunt mice", "owls hunt at night"], "globex": ["quantum turbines", "turbines hum"]}
    chunks, token_lists = [], []
    for tenant, docs in texts.items():
        for i, text in enumerate(docs):
            chunks.append(
                ChunkRecord(f"{tenant}{i}", f"{tenant}{i}", 0, "", text, f"p{tenant}{i}", {}, tenant)
            )
            token_lists.append(analyzer.tokens(text))
    snapshot = IndexSnapshot("v1", {}, chunks, TermMatrix.empty().append(token_lists), None, analyzer)
    turbine, hunt = analyzer.tokens("turbines")[0], analyzer.tokens("hunt")[0]
    assert snapshot.idf(turbine) is not None  # the index knows it ...
    assert tenant_idf(snapshot, "acme")(turbine) is None  # ... acme does not
    assert tenant_idf(snapshot, "globex")(turbine) == pytest.approx(math.log1p((2 - 2 + 0.5) / 2.5))
    assert tenant_idf(snapshot, "acme")(hunt) == pytest.approx(math.log1p((2 - 2 + 0.5) / 2.5))
    assert tenant_idf(snapshot, "initech")(hunt) is None  # a tenant with no chunks knows no term
