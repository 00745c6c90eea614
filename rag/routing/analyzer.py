"""The query analyzer: cheap features of a query text (no model call, well under a millisecond).

Features feed the router and are shown in the response's ``plan``. IDF statistics come from the BM25
vocabulary of the index version being searched (``idf`` is :meth:`rag.index.snapshot.IndexSnapshot.idf`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import StrEnum

from rag.text.analyzer import Analyzer

IdfLookup = Callable[[str], float | None]

_WORD = re.compile(r"\w+", re.UNICODE)
_NUMBER = re.compile(r"(?<![\w.])[-+]?\d+(?:[.,]\d+)?%?(?![\w])")
# snake_case, CamelCase inside a word, dotted names (os.path.join), letter-digit mixes (p53, IL-6, BRCA1)
_IDENTIFIER = re.compile(
    r"\b\w+_\w+\b|\b[a-z]+[A-Z]\w*\b|\b[A-Z][a-z]+[A-Z]\w*\b|\b\w+\.\w+(?:\.\w+)*\(?\)?|"
    r"\b(?=\w*[A-Za-z])(?=\w*\d)[A-Za-z\d]+(?:-[A-Za-z\d]+)*\b|\b[A-Z]{2,}(?:-\d+)?\b"
)
# a quoted phrase; the run inside a curly quote stops at the next opening quote too, so a text of many
# opening quotes is scanned once, not once per quote (tests/rag/test_regex_linearity.py)
_QUOTED = re.compile(r"\"[^\"]{2,}\"|“[^“”]{2,}”|'[^']{3,}'")
_QUESTION_START = frozenset(
    "what which who whom whose when where why how is are was were do does did can could should would "
    "will has have had may might must".split()
)
_STRONG_BREAK = re.compile(r";|\?(?=\s*\S)")  # several questions or statements in one query
_CLAUSE_BREAK = re.compile(r"\b(?:whereas|while|versus|vs\.?|but|compared (?:to|with))\b", re.IGNORECASE)

# a handful of frequent function words per language: enough to tell the common Latin-script languages
# apart on a short query; anything else is reported by script, or "und" (undetermined)
_LANGUAGE_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the of and to in is that for with on are what how does do by from this which".split()),
    "de": frozenset("der die das und ist nicht mit von zu den ein eine wie was auf für des".split()),
    "fr": frozenset("le la les et est des une un du que qui dans pour pas sur quel comment".split()),
    "es": frozenset("el la los las y es de que en un una por con para qué cómo del".split()),
    "it": frozenset("il lo la gli le e è di che un una per con non come cosa del della".split()),
    "nl": frozenset("de het een en is van dat niet met voor op wat hoe zijn".split()),
    "pt": frozenset("o a os as e é de que em um uma para com não como do da".split()),
}
_SCRIPTS: tuple[tuple[str, str], ...] = (
    ("\u4e00", "\u9fff"),  # CJK unified ideographs
    ("\u3040", "\u30ff"),  # Japanese kana
    ("\uac00", "\ud7af"),  # Hangul
    ("\u0400", "\u04ff"),  # Cyrillic
    ("\u0600", "\u06ff"),  # Arabic
    ("\u0590", "\u05ff"),  # Hebrew
    ("\u0900", "\u097f"),  # Devanagari
)
_SCRIPT_LANG = ("zh", "ja", "ko", "ru", "ar", "he", "hi")
# one character class per script: the counts are C-level scans (the analysis runs on the event loop, so
# no per-character Python loop over a query of up to 2,048 characters)
_SCRIPT_RES = tuple(re.compile(f"[{lo}-{hi}]") for lo, hi in _SCRIPTS)

RARE_IDF = 5.0  # a term this rare (about 1 chunk in 150) is a strong anchor for BM25


class Complexity(StrEnum):
    SIMPLE = "simple"
    MODERATE = "moderate"
    COMPLEX = "complex"


@dataclass(frozen=True, slots=True)
class QueryFeatures:
    """What the router knows about a query before retrieving anything."""

    chars: int
    words: int
    terms: int  # analysed (non-stopword, stemmed) terms
    unknown_terms: int  # terms not in the index vocabulary
    question: bool  # phrased as a question (wh-word / auxiliary first, or a '?')
    keyword_style: bool  # a bag of keywords: short, no function words
    has_number: bool
    has_identifier: bool
    has_quoted_phrase: bool
    clauses: int  # parts separated by ';', '?', 'whereas', 'vs', 'compared to', …
    sub_questions: int  # parts separated by ';' or '?' alone (what multi-query decomposes well)
    idf_mean: float  # over the known terms; 0 when none is known
    idf_max: float
    idf_min: float
    rare_terms: int  # known terms with IDF >= RARE_IDF
    language: str  # ISO 639-1 guess, or "und"
    difficulty: float  # 0 (easy for lexical search) … 1 (hard): see :func:`difficulty`
    complexity: Complexity

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {name: getattr(self, name) for name in _FIELD_NAMES}  # no deep copy
        out["complexity"] = self.complexity.value
        for key in ("idf_mean", "idf_max", "idf_min", "difficulty"):
            out[key] = round(float(getattr(self, key)), 3)
        return out

    def vector(self) -> list[float]:
        """A small numeric context for the bandit: bias, then features scaled to about [0, 1]."""
        return [
            1.0,
            min(self.terms, 32) / 32,
            self.unknown_terms / max(self.terms, 1),
            float(self.question),
            float(self.has_number or self.has_identifier),
            min(self.idf_mean, 10.0) / 10,
            min(self.idf_max, 10.0) / 10,
            min(self.rare_terms, 5) / 5,
            self.difficulty,
            float(self.complexity is Complexity.COMPLEX),
        ]


_FIELD_NAMES = tuple(f.name for f in fields(QueryFeatures))

FEATURE_NAMES = (
    "bias",
    "terms",
    "unknown_share",
    "question",
    "number_or_identifier",
    "idf_mean",
    "idf_max",
    "rare_terms",
    "difficulty",
    "complex",
)


def detect_language(words: list[str], text: str) -> str:
    """The language of a short text: by script for non-Latin scripts, else by function-word votes."""
    if not text.isascii():  # ASCII is Latin script: the script count only for other texts
        letters = "".join(filter(str.isalpha, text))
        counts = [len(script.findall(letters)) for script in _SCRIPT_RES]
        if letters and max(counts) * 2 > len(letters):
            return _SCRIPT_LANG[counts.index(max(counts))]
    present = set(words)
    votes = {lang: len(vocab & present) for lang, vocab in _LANGUAGE_WORDS.items()}
    best = max(votes, key=lambda lang: votes[lang])
    if votes[best] == 0:
        return "en" if words and all(w.isascii() for w in words) else "und"
    return best


def difficulty(*, terms: int, unknown_terms: int, idf_max: float, rare_terms: int, clauses: int) -> float:
    """How hard a query is likely to be for a lexical first stage, in [0, 1].

    Hard: no rare anchor term (low max IDF), terms the index does not know, very short (ambiguous) or
    long multi-clause queries. Easy: a few terms with a rare anchor. A heuristic, documented so that the
    router's thresholds can be read against it.
    """
    if terms == 0:
        return 1.0
    anchor = min(idf_max / 8.0, 1.0)  # IDF 8 ~ a term in one chunk of ~3,000
    unknown = unknown_terms / terms
    shortness = 1.0 if terms == 1 else 0.5 if terms == 2 else 0.0
    length = min(max(terms - 12, 0) / 20, 1.0) + 0.2 * max(clauses - 1, 0)
    rare_bonus = 0.1 * min(rare_terms, 3)
    score = 0.55 * (1 - anchor) + 0.25 * unknown + 0.15 * shortness + 0.15 * length - rare_bonus + 0.15
    return min(max(score, 0.0), 1.0)


class QueryAnalyzer:
    """Computes :class:`QueryFeatures`; ``analyzer`` must be the index's BM25 analyzer."""

    def __init__(self, analyzer: Analyzer, *, rare_idf: float = RARE_IDF) -> None:
        self.analyzer = analyzer
        self.rare_idf = rare_idf

    def analyze(self, text: str, idf: IdfLookup) -> QueryFeatures:
        words = _WORD.findall(text.lower())
        terms = self.analyzer.tokens(text)
        idfs = [v for v in (idf(t) for t in terms) if v is not None]
        unknown = len(terms) - len(idfs)
        strong = len(_STRONG_BREAK.findall(text))
        clauses = 1 + strong + len(_CLAUSE_BREAK.findall(text))
        function_words = sum(w in self.analyzer.stopwords for w in words)
        idf_max = max(idfs, default=0.0)
        rare = sum(v >= self.rare_idf for v in idfs)
        diff = difficulty(
            terms=len(terms), unknown_terms=unknown, idf_max=idf_max, rare_terms=rare, clauses=clauses
        )
        complexity = (
            Complexity.COMPLEX
            if clauses > 1 or len(terms) > 16
            else Complexity.MODERATE
            if len(terms) > 6
            else Complexity.SIMPLE
        )
        return QueryFeatures(
            chars=len(text),
            words=len(words),
            terms=len(terms),
            unknown_terms=unknown,
            question=text.rstrip().endswith("?") or (bool(words) and words[0] in _QUESTION_START),
            keyword_style=len(words) <= 6 and function_words == 0,
            has_number=_NUMBER.search(text) is not None,
            has_identifier=_IDENTIFIER.search(text) is not None,
            has_quoted_phrase=_QUOTED.search(text) is not None,
            clauses=clauses,
            sub_questions=1 + strong,
            idf_mean=math.fsum(idfs) / len(idfs) if idfs else 0.0,
            idf_max=idf_max,
            idf_min=min(idfs, default=0.0),
            rare_terms=rare,
            language=detect_language(words, text),
            difficulty=diff,
            complexity=complexity,
        )
