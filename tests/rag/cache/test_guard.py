"""The lexical guard of the semantic cache (rag.cache.guard.check): what embeddings blur — a negation, a
changed number or date, an opposite word, a substituted specific subject — refuses a semantic hit; a
rephrasing, an elaboration on one side only, or a common word swapped passes."""

from __future__ import annotations

import pytest

from rag.cache.guard import GuardVerdict, check
from rag.text.analyzer import Analyzer

ANALYZER = Analyzer()
RARE = {"aspirin": 6.0, "ibuprofen": 6.5, "paracetamol": 3.9, "bleeding": 2.0}


def idf(term: str) -> float | None:
    """Index statistics by stem: the drug names are rare (paracetamol just below the default cut)."""
    by_stem = {ANALYZER.tokens(word)[0]: value for word, value in RARE.items()}
    return by_stem.get(term)


def no_idf(term: str) -> float | None:
    return None


def verdict(a: str, b: str, *, rare_idf: float = 4.0) -> GuardVerdict:
    """The verdict both ways round: the guard is symmetric, so a test pins it once for both."""
    forward = check(a, b, ANALYZER, idf, rare_idf=rare_idf)
    backward = check(b, a, ANALYZER, idf, rare_idf=rare_idf)
    assert forward.compatible == backward.compatible, (forward, backward)
    return forward


# -- what passes ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("does aspirin cause bleeding", "does aspirin cause bleeding"),
        ("what causes the common cold", "what is the cause of the common cold?"),
        ("Does aspirin cause bleeding", "does aspirin cause bleeding ?"),  # first word capitalised: no name
        ("aspirin bleeding risk in 2019", "bleeding risk of aspirin in 2019"),
        ("how many legs does a spider have", "how many legs do spiders have"),
    ],
)
def test_rephrasings_pass(a: str, b: str) -> None:
    assert verdict(a, b) == GuardVerdict(True)


def test_an_elaboration_on_one_side_only_passes() -> None:
    """A specific term on one side only adds detail; it does not substitute the subject."""
    assert verdict("how to count words in python", "how to count words in python with collections.Counter")
    assert verdict("side effects of aspirin", "side effects").compatible


def test_common_words_swapped_pass_when_neither_side_is_specific() -> None:
    """Lower-case words the index sees often (no IDF, or below ``rare_idf``) are not subjects."""
    assert verdict("does coffee cause headaches", "does tea cause headaches").compatible
    # paracetamol's IDF (3.9) is under the default 4.0: a swap for aspirin is one-sided
    assert verdict("does aspirin cause bleeding", "does paracetamol cause bleeding").compatible


# -- negation ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("does aspirin cause bleeding", "does aspirin not cause bleeding"),
        ("does aspirin cause bleeding", "aspirin doesn't cause bleeding"),
        ("does aspirin cause bleeding", "aspirin doesn’t cause bleeding"),  # typographic apostrophe
        ("smokers lung cancer risk", "non-smokers lung cancer risk"),
        ("patients with fever", "patients without fever"),
        ("can the drug be taken", "the drug cannot be taken"),
        ("mice that respond to treatment", "mice unable to respond to treatment"),
    ],
)
def test_negation_on_one_side_refuses(a: str, b: str) -> None:
    assert verdict(a, b) == GuardVerdict(False, "negation differs")


def test_negation_on_both_sides_passes() -> None:
    assert verdict("does aspirin not cause bleeding", "aspirin doesn't cause bleeding").compatible
    assert verdict("never mix these drugs", "do not mix these drugs").compatible


# -- numbers and dates ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("aspirin 5 mg daily", "aspirin 10 mg daily"),
        ("two doses of the vaccine", "three doses of the vaccine"),
        ("flu cases in march", "flu cases in april"),
        ("meetings on monday", "meetings on friday"),
        ("survival after 5 years", "survival after years"),  # a number on one side only
        ("inflation in 2019", "inflation in 2020"),
        ("a 5% increase in risk", "a 50% increase in risk"),
        ("python 3.11 release notes", "python 3.12 release notes"),
    ],
)
def test_numbers_or_dates_that_differ_refuse(a: str, b: str) -> None:
    assert verdict(a, b) == GuardVerdict(False, "numbers or dates differ")


def test_numbers_are_compared_as_values_not_spellings() -> None:
    """A sentence's full stop does not change a number; case does not change a number word."""
    assert verdict("released in 2019.", "released in 2019").compatible
    assert verdict("Two doses of the vaccine", "two doses of the vaccine").compatible


def test_a_thousands_separator_does_not_change_a_number() -> None:
    assert verdict("revenue above 1,000 dollars", "revenue above 1000 dollars").compatible


def test_numbers_with_a_comma_keep_their_digits_in_order() -> None:
    """A decimal comma is not a thousands separator: 1,5 mg is neither 5,1 mg nor 15 mg."""
    assert not verdict("a dose of 1,5 mg", "a dose of 5,1 mg").compatible
    assert not verdict("a dose of 1,5 mg", "a dose of 15 mg").compatible
    assert verdict("a dose of 1,5 mg", "dose of 1,5 mg").compatible


# -- opposite words ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("a", "b", "opposed"),
    [
        ("does exercise increase blood pressure", "does exercise decrease blood pressure", "decrease"),
        ("sort the list ascending", "sort the list descending", "ascending"),
        ("encode a string to base64", "decode a string to base64", "decode"),
        ("acute kidney injury", "chronic kidney injury", "acute"),
    ],
)
def test_opposite_words_refuse(a: str, b: str, opposed: str) -> None:
    result = verdict(a, b)
    assert not result.compatible
    assert result.reason.startswith("opposite words:") and opposed in result.reason


def test_the_same_opposite_word_on_both_sides_passes() -> None:
    assert verdict("does exercise increase blood pressure", "blood pressure increase by exercise").compatible


# -- substituted subjects ---------------------------------------------------------------------------------
def test_a_rare_term_substituted_for_another_refuses() -> None:
    result = verdict("does aspirin cause bleeding", "does ibuprofen cause bleeding")
    assert result == GuardVerdict(False, "different subjects: ['aspirin'] vs ['ibuprofen']")


def test_rare_idf_sets_what_counts_as_rare() -> None:
    # below the cut, paracetamol is not specific: one-sided, passes; with a lower cut it is a subject
    assert verdict("does aspirin cause bleeding", "does paracetamol cause bleeding").compatible
    strict = verdict("does aspirin cause bleeding", "does paracetamol cause bleeding", rare_idf=3.0)
    assert not strict.compatible and strict.reason.startswith("different subjects")
    # with a cut above every IDF, and lower-case words, nothing is specific
    assert verdict("does aspirin cause bleeding", "does ibuprofen cause bleeding", rare_idf=10.0).compatible


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("who founded Apple", "who founded Microsoft"),  # capitalised after the first word: a name
        ("how to use np.array", "how to use pd.DataFrame"),  # dotted identifiers
        ("what does read_csv return", "what does to_json return"),  # snake_case
        ("fix a NullPointerException", "fix a ClassCastException"),  # camelCase
    ],
)
def test_names_and_identifiers_are_subjects_without_index_statistics(a: str, b: str) -> None:
    result = check(a, b, ANALYZER, no_idf)
    assert not result.compatible and result.reason.startswith("different subjects"), result


def test_the_order_of_checks_names_the_first_difference() -> None:
    """Negation is checked before numbers, numbers before opposites, opposites before subjects."""
    assert verdict("aspirin 5 mg", "ibuprofen not 10 mg").reason == "negation differs"
    assert verdict("aspirin 5 mg increase", "ibuprofen 10 mg decrease").reason == "numbers or dates differ"
    assert verdict("aspirin increase", "ibuprofen decrease").reason.startswith("opposite words")
