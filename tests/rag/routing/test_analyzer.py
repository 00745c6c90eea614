"""The query analyzer: features from the text and the index vocabulary, no model call."""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from functools import partial
from types import FrameType
from typing import TYPE_CHECKING

import pytest

from rag.routing.analyzer import (
    _SCRIPT_LANG as SCRIPT_LANG,
)
from rag.routing.analyzer import (
    _SCRIPTS as SCRIPTS,
)
from rag.routing.analyzer import (
    FEATURE_NAMES,
    Complexity,
    QueryAnalyzer,
    detect_language,
    difficulty,
)
from rag.text.analyzer import Analyzer

if TYPE_CHECKING:
    from _typeshed import TraceFunction

WORD_IDF = {
    "vitamin": 6.5,
    "d": 2.0,
    "deficiency": 4.0,
    "rickets": 9.0,
    "cause": 1.2,
    "bm25": 8.5,
    "p53": 7.0,
}
IDF = {Analyzer().tokens(word)[0]: value for word, value in WORD_IDF.items()}  # keyed by index terms


def idf(term: str) -> float | None:
    return IDF.get(term)


@pytest.fixture(scope="module")
def qa() -> QueryAnalyzer:
    return QueryAnalyzer(Analyzer())


def test_question_and_idf_statistics(qa: QueryAnalyzer) -> None:
    f = qa.analyze("Does vitamin D deficiency cause rickets?", idf)
    assert f.question and not f.keyword_style
    assert f.terms == 5 and f.unknown_terms == 0
    assert f.idf_max == 9.0 and f.idf_min == 1.2
    assert f.idf_mean == pytest.approx((6.5 + 2.0 + 4.0 + 1.2 + 9.0) / 5)
    assert f.rare_terms == 2  # vitamin (6.5) and rickets (9.0) are past the rare threshold (5.0)
    assert f.language == "en"
    assert f.complexity is Complexity.SIMPLE


def test_keyword_query_with_identifier_number_and_quotes(qa: QueryAnalyzer) -> None:
    f = qa.analyze('p53 "tumour suppressor" 2019', idf)
    assert f.keyword_style and not f.question
    assert f.has_identifier and f.has_number and f.has_quoted_phrase
    assert f.unknown_terms == 3  # tumour, suppressor, 2019 are not in this vocabulary


@pytest.mark.parametrize(
    ("text", "identifier"),
    [
        ("os.path.join", True),
        ("snake_case_name", True),
        ("CamelCase", True),
        ("IL-6", True),
        ("plain words", False),
    ],
)
def test_identifiers(qa: QueryAnalyzer, text: str, identifier: bool) -> None:
    assert qa.analyze(text, idf).has_identifier is identifier


def test_clauses_make_a_query_complex(qa: QueryAnalyzer) -> None:
    f = qa.analyze("vitamin D deficiency causes rickets whereas calcium excess causes stones", idf)
    assert f.clauses == 2 and f.sub_questions == 1
    assert f.complexity is Complexity.COMPLEX
    g = qa.analyze("what causes rickets? how is it treated; and by whom?", idf)
    assert g.sub_questions == 3 and g.clauses == 3


def test_empty_and_stopword_only_queries_are_hardest(qa: QueryAnalyzer) -> None:
    for text in ("", "what is the"):
        f = qa.analyze(text, idf)
        assert f.terms == 0 and f.idf_max == 0.0 and f.difficulty == 1.0


def test_difficulty_orders_anchored_below_vague() -> None:
    anchored = difficulty(terms=4, unknown_terms=0, idf_max=9.0, rare_terms=2, clauses=1)
    vague = difficulty(terms=4, unknown_terms=0, idf_max=2.0, rare_terms=0, clauses=1)
    unknown = difficulty(terms=4, unknown_terms=4, idf_max=0.0, rare_terms=0, clauses=1)
    assert 0.0 <= anchored < vague < unknown <= 1.0


@pytest.mark.parametrize(
    ("text", "lang"),
    [
        ("what is the cause of the disease", "en"),
        ("wie ist die Wirkung der Impfung und was", "de"),
        ("quel est le traitement pour la maladie", "fr"),
        ("cuál es el tratamiento para la enfermedad", "es"),
        ("维生素D缺乏", "zh"),
        ("витамин D дефицит", "ru"),
        ("zzqx", "en"),  # ASCII with no function word: the index's language is the best guess
        ("ǂǂǂ", "und"),
    ],
)
def test_language(text: str, lang: str) -> None:
    import re

    assert detect_language(re.findall(r"\w+", text.lower()), text) == lang


def test_vector_matches_feature_names_and_is_bounded(qa: QueryAnalyzer) -> None:
    for text in ("", "Does vitamin D deficiency cause rickets?", "a b c " * 40):
        v = qa.analyze(text, idf).vector()
        assert len(v) == len(FEATURE_NAMES)
        assert v[0] == 1.0 and all(0.0 <= x <= 1.0 for x in v)


def test_as_dict_is_json_ready(qa: QueryAnalyzer) -> None:
    import json

    d = qa.analyze("Does vitamin D deficiency cause rickets?", idf).as_dict()
    assert json.loads(json.dumps(d))["complexity"] == "simple"


def _lines_run(fn: Callable[[], object]) -> int:
    """Python lines executed by ``fn()``: a deterministic measure of interpreted work (no timing)."""
    count = 0

    def tracer(frame: FrameType, event: str, arg: object) -> TraceFunction:
        nonlocal count
        if event == "line":
            count += 1
        return tracer

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    return count


@pytest.mark.parametrize("unit", ["é", "中", "“", "Ж", "٣", "a"])
def test_query_analysis_does_no_per_character_python_work(qa: QueryAnalyzer, unit: str) -> None:
    """The analysis runs on the event loop: its interpreted work may grow with the number of words, not
    with the number of characters (those passes run in C: regex scans, str methods). One word of 1k
    and of 2k characters must take the same number of Python lines."""
    lines = [_lines_run(partial(qa.analyze, unit * n, idf)) for n in (1024, 2048)]
    assert lines[0] == lines[1], f"analyze: {lines[0]} -> {lines[1]} Python lines"


def test_language_by_script_counts_letters_as_the_reference_loop(qa: QueryAnalyzer) -> None:
    """The C-level script count equals the per-character loop it replaces (the reference)."""

    def reference(text: str) -> str | None:
        counts = [0] * len(SCRIPTS)
        letters = 0
        for ch in text:
            if ch.isalpha():
                letters += 1
                for i, (lo, hi) in enumerate(SCRIPTS):
                    if lo <= ch <= hi:
                        counts[i] += 1
                        break
        if letters and max(counts) * 2 > letters:
            return SCRIPT_LANG[counts.index(max(counts))]
        return None

    rng = random.Random(7)
    pool = "aé中日ひカ한ЖҐ҂ع٣אहअ ,.-1" + "".join(lo + hi for lo, hi in SCRIPTS)
    for _ in range(5_000):
        text = "".join(rng.choice(pool) for _ in range(rng.randint(1, 12)))
        expected = reference(text)
        got = detect_language([], text)
        assert got == (expected or detect_language([], "")), text
