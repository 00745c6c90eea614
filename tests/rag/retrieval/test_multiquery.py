from collections import Counter, defaultdict

import numpy as np
import pytest

from rag.bm25.index import BM25Index, BM25Params, TermMatrix
from rag.retrieval.multiquery import (
    decompose,
    document_frequency,
    expanded_query,
    feedback_rows,
    prf_scores,
    prf_terms,
    term_idf,
)
from rag.text.analyzer import Analyzer

ANALYZER = Analyzer()

# --- decomposition ----------------------------------------------------------------------------------------


def test_splits_on_semicolon_and_question_mark_and_keeps_the_original_first() -> None:
    query = "What causes type 2 diabetes? How is insulin resistance treated; statin side effects"
    assert decompose(query, ANALYZER) == [
        query,
        "What causes type 2 diabetes",
        "How is insulin resistance treated",
        "statin side effects",
    ]


def test_splits_on_contrast_markers() -> None:
    assert decompose("sparse retrieval latency versus dense retrieval latency", ANALYZER)[1:] == [
        "sparse retrieval latency",
        "dense retrieval latency",
    ]
    assert decompose("python startup time vs. java startup time", ANALYZER)[1:] == [
        "python startup time",
        "java startup time",
    ]
    assert decompose("statins lower cholesterol levels, but raise diabetes risk", ANALYZER)[1:] == [
        "statins lower cholesterol levels",
        "raise diabetes risk",
    ]
    assert decompose("aspirin bleeding risk when compared to warfarin bleeding risk", ANALYZER)[1:] == [
        "aspirin bleeding risk",
        "warfarin bleeding risk",
    ]


def test_splits_and_between_clauses() -> None:
    assert decompose("what is bm25 ranking and how does dense retrieval work", ANALYZER)[1:] == [
        "what is bm25 ranking",
        "how does dense retrieval work",
    ]
    assert decompose("BRCA1 mutations raise cancer risk, and smoking damages lungs", ANALYZER)[1:] == [
        "BRCA1 mutations raise cancer risk",
        "smoking damages lungs",
    ]


@pytest.mark.parametrize(
    "query",
    [
        "salt and pepper",
        "salt and pepper seasoning",  # "salt" alone has one content token
        "apples versus oranges",
        "effects of aspirin on heart attack and stroke",  # "stroke" alone is one token
        "what is it and how is it",  # stopword-only parts
        "the and of; or but",  # stopwords around every delimiter
        "interaction between TDP-43 proteins and respiratory complex proteins",  # bare "and": not a clause
        "mixing BMP4 growth factor, activin A, CHIR99021 compound, and SU504 inhibitor",  # a list
    ],
)
def test_does_not_split(query: str) -> None:
    assert decompose(query, ANALYZER) == [query]


def test_bare_conjunctions_split_noun_phrases_when_asked() -> None:
    query = "interaction between TDP-43 proteins and respiratory complex proteins"
    assert decompose(query, ANALYZER, bare_conjunctions=True)[1:] == [
        "interaction between TDP-43 proteins",
        "respiratory complex proteins",
    ]


def test_min_content_tokens_is_the_split_threshold() -> None:
    query = "aspirin bleeding versus warfarin"
    assert decompose(query, ANALYZER) == [query]
    assert decompose(query, ANALYZER, min_content_tokens=1)[1:] == ["aspirin bleeding", "warfarin"]


def test_max_parts_caps_the_sub_queries_and_prefers_strong_cuts() -> None:
    query = "alpha beta gamma; delta epsilon zeta; eta theta iota, and kappa lambda mu"
    assert len(decompose(query, ANALYZER)) == 1 + 3
    assert decompose(query, ANALYZER, max_parts=2)[1:] == [
        "alpha beta gamma",
        "delta epsilon zeta; eta theta iota, and kappa lambda mu",
    ]
    assert decompose(query, ANALYZER, max_parts=1) == [query]


def test_decompose_is_deterministic_and_normalises_whitespace() -> None:
    query = "  aspirin  bleeding risk;\n warfarin   bleeding risk "
    first = decompose(query, ANALYZER)
    assert first == decompose(query, ANALYZER)
    assert first == [query, "aspirin bleeding risk", "warfarin bleeding risk"]


def test_decompose_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="max_parts must be at least 1, got 0"):
        decompose("a b; c d", ANALYZER, max_parts=0)
    with pytest.raises(ValueError, match="min_content_tokens must be at least 1, got 0"):
        decompose("a b; c d", ANALYZER, min_content_tokens=0)


# --- pseudo-relevance feedback ----------------------------------------------------------------------------

DOCS = [
    "car engine repair garage mechanic",  # 0: matches "car"
    "car engine repair oil mechanic",  # 1: matches "car"
    "automobile engine repair mechanic garage",  # 2: relevant, but never says "car"
    "banana fruit smoothie recipe",
    "apple fruit pie recipe",
    "orange fruit juice breakfast",
    "river boat fishing trip",
    "mountain hiking trail map",
]


@pytest.fixture
def bm25() -> BM25Index:
    tokens = [ANALYZER.tokens(d) for d in DOCS]
    return BM25Index(TermMatrix.empty().append(tokens), ANALYZER, BM25Params())


def term(bm25: BM25Index, word: str) -> int:
    return bm25.terms.term_ids[ANALYZER.tokens(word)[0]]


def test_expansion_pulls_in_a_relevant_document_the_query_misses(bm25: BM25Index) -> None:
    tokens = ANALYZER.tokens("car")
    plain = bm25.scores(tokens)
    assert plain[2] == 0
    expanded = prf_scores(bm25, tokens, feedback_docs=2, n_terms=5, max_df_ratio=1.0)
    assert expanded[2] > 0
    assert set(np.argsort(-expanded)[:3].tolist()) == {0, 1, 2}
    assert (expanded[3:] == 0).all()


def test_prf_terms_exclude_query_terms_and_rare_terms(bm25: BM25Index) -> None:
    ids, _ = bm25.query_terms(ANALYZER.tokens("car"))
    chosen = dict(prf_terms(bm25, [0, 1], ids, n_terms=10, max_df_ratio=1.0))
    assert term(bm25, "car") not in chosen
    assert term(bm25, "oil") not in chosen  # in one row only: below min_df=2
    assert {term(bm25, w) for w in ("engine", "repair", "mechanic", "garage")} == set(chosen)
    with_rare = dict(prf_terms(bm25, [0, 1], ids, n_terms=10, min_df=1, max_df_ratio=1.0))
    assert term(bm25, "oil") in with_rare


def test_prf_terms_drop_common_terms(bm25: BM25Index) -> None:
    ids, _ = bm25.query_terms(ANALYZER.tokens("car"))
    chosen = dict(prf_terms(bm25, [0, 1], ids, n_terms=10, max_df_ratio=2 / len(DOCS)))
    assert set(chosen) == {term(bm25, "garage")}  # df 2; engine/repair/mechanic are in 3 rows


def test_prf_term_weights_are_rm1_against_a_naive_loop(bm25: BM25Index) -> None:
    rows, row_scores = [0, 1, 2], [3.0, 2.0, 1.0]
    got = prf_terms(bm25, rows, [], n_terms=100, min_df=1, max_df_ratio=1.0, row_weights=row_scores)
    expected: defaultdict[str, float] = defaultdict(float)
    total = sum(row_scores)
    for row, score in zip(rows, row_scores, strict=True):
        tokens = ANALYZER.tokens(DOCS[row])
        for token, tf in Counter(tokens).items():
            expected[token] += (score / total) * tf / len(tokens)
    assert {bm25.terms.vocab[t]: pytest.approx(w) for t, w in got} == dict(expected)
    assert sum(w for _, w in got) == pytest.approx(1.0)  # nothing excluded: RM1 is a distribution
    assert [w for _, w in got] == sorted((w for _, w in got), reverse=True)


def test_prf_terms_limits_and_empty_feedback(bm25: BM25Index) -> None:
    assert len(prf_terms(bm25, [0, 1, 2], [], n_terms=2, min_df=1, max_df_ratio=1.0)) == 2
    assert prf_terms(bm25, [], [], n_terms=5) == []
    assert prf_terms(bm25, [0], [], n_terms=0) == []
    with pytest.raises(ValueError, match="row_weights"):
        prf_terms(bm25, [0, 1], [], row_weights=[1.0])
    with pytest.raises(ValueError, match="max_df_ratio"):
        prf_terms(bm25, [0, 1], [], max_df_ratio=0)


def test_expanded_query_weights_sum_as_documented() -> None:
    ids, counts = np.array([4, 7]), np.array([1.0, 3.0])
    out_ids, weights = expanded_query(ids, counts, [(9, 0.5), (2, 0.25)], original_weight=0.7)
    assert out_ids.tolist() == [2, 4, 7, 9]
    by_id = dict(zip(out_ids.tolist(), weights.tolist(), strict=True))
    assert by_id[4] + by_id[7] == pytest.approx(0.7)
    assert by_id[7] == pytest.approx(3 * by_id[4])
    assert by_id[9] + by_id[2] == pytest.approx(0.3)
    assert by_id[9] == pytest.approx(2 * by_id[2])


def test_expanded_query_edge_cases() -> None:
    ids, counts = np.array([1, 2]), np.array([1.0, 1.0])
    _, only_original = expanded_query(ids, counts, [], original_weight=0.7)
    assert only_original.sum() == pytest.approx(1.0)
    out_ids, merged = expanded_query(ids, counts, [(2, 1.0)], original_weight=0.5)
    assert dict(zip(out_ids.tolist(), merged.tolist(), strict=True)) == {1: 0.25, 2: 0.75}
    with pytest.raises(ValueError, match="original_weight"):
        expanded_query(ids, counts, [], original_weight=1.5)


def test_prf_scores_are_deterministic(bm25: BM25Index) -> None:
    tokens = ANALYZER.tokens("car repair")
    first = prf_scores(bm25, tokens, max_df_ratio=1.0)
    np.testing.assert_array_equal(first, prf_scores(bm25, tokens, max_df_ratio=1.0))


def test_prf_scores_without_matches_are_zero(bm25: BM25Index) -> None:
    assert not prf_scores(bm25, ANALYZER.tokens("spaceship")).any()


def test_mask_keeps_feedback_inside_the_allowed_rows(bm25: BM25Index) -> None:
    tokens = ANALYZER.tokens("car")
    mask = np.zeros(len(DOCS), dtype=bool)
    mask[[1, 3, 4]] = True  # row 0 (with "garage") is not visible to this query
    scores = prf_scores(bm25, tokens, feedback_docs=5, n_terms=5, min_df=1, max_df_ratio=1.0, mask=mask)
    unmasked = prf_scores(bm25, tokens, feedback_docs=5, n_terms=5, min_df=1, max_df_ratio=1.0)
    assert 0 < scores[2] < unmasked[2]  # "garage" (shared by rows 0 and 2) only comes from row 0


def test_feedback_rows() -> None:
    scores = np.array([0.0, 3.0, 1.0, 2.0, 2.0])
    assert feedback_rows(scores, 3).tolist() == [1, 3, 4]
    assert feedback_rows(scores, 10).tolist() == [1, 3, 4, 2]
    mask = np.array([True, False, True, True, True])
    assert feedback_rows(scores, 2, mask=mask).tolist() == [3, 4]
    chunk_doc = np.array([0, 0, 1, 0, 2])  # rows 1 and 3 are chunks of document 0
    assert feedback_rows(scores, 3, chunk_doc=chunk_doc).tolist() == [1, 4, 2]


def test_document_frequency_and_idf(bm25: BM25Index) -> None:
    ids = np.array([term(bm25, "engine"), term(bm25, "banana")])
    assert document_frequency(bm25, ids).tolist() == [3, 1]
    idf = term_idf(bm25, ids)
    assert idf[0] < idf[1]


class _CountingAnalyzer(Analyzer):
    """Counts the characters the decomposition hands to the analyzer: its work, without a clock."""

    def __init__(self) -> None:
        super().__init__()
        self.chars = 0

    def tokens(self, text: str) -> list[str]:
        self.chars += len(text)
        return super().tokens(text)


@pytest.mark.parametrize("unit", ["a;", "x? ", "cats, and dogs "])
def test_decomposition_work_grows_linearly_with_the_number_of_candidate_cuts(unit: str) -> None:
    """A query made of many short would-be parts ("a;a;a;…") offers a cut per part; each rejected trial
    re-analysed the whole text, so 2x the input cost 4x the work. Doubling the input must at most
    (about) double the work."""
    work = []
    for n in (1024, 2048):
        analyzer = _CountingAnalyzer()
        decompose((unit * (n // len(unit) + 1))[:n], analyzer)
        work.append(analyzer.chars)
    assert work[1] <= 2.5 * work[0], work
