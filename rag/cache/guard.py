"""The lexical guard of the semantic cache: two queries whose embeddings are close may still ask different
things. Sentence embeddings barely move for a negation ("does X cause Y" / "does X not cause Y"), a changed
number, date or name, or an opposite word ("increase" / "decrease"); the answer does. Before a semantic hit
is served, the guard compares what embeddings blur:

- negation (``not``, ``no``, ``never``, ``without``, ``n't``…): present in one and not the other → differ;
- numbers (digits, number words, months, weekdays): the sets must be equal;
- polar words (a fixed table of opposites): the sets must be equal;
- specific terms: a term that only one of the two has, and that is rare in the index (IDF at least
  ``rare_idf``) or shaped like an identifier or a name, marks a different subject.

Everything here is a pure function of the two texts and the index's term statistics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.text.analyzer import Analyzer

_WORD = re.compile(r"[A-Za-z0-9_][\w.\-]*[\w]|\w")
NEGATIONS = frozenset(
    "not no never without cannot nor neither none nothing nobody nowhere lack lacks lacking absent "
    "absence fail fails unable".split()
)
NUMBER_WORDS = frozenset(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred "
    "thousand million billion half quarter twice double triple single first second third fourth fifth "
    "january february march april june july august september october november december monday "
    "tuesday wednesday thursday friday saturday sunday yesterday today tomorrow".split()
)
_OPPOSITES = [
    ("increase", "decrease", "reduce", "lower", "raise"),
    ("increases", "decreases", "reduces", "lowers", "raises"),
    ("increased", "decreased", "reduced", "lowered", "raised"),
    ("higher", "lower"),
    ("high", "low"),
    ("more", "less", "fewer"),
    ("most", "least"),
    ("before", "after"),
    ("maximum", "minimum", "max", "min"),
    ("largest", "smallest"),
    ("first", "last"),
    ("add", "remove", "delete"),
    ("open", "close"),
    ("start", "stop"),
    ("encode", "decode"),
    ("encoding", "decoding"),
    ("read", "write"),
    ("reading", "writing"),
    ("upper", "lower"),
    ("uppercase", "lowercase"),
    ("positive", "negative"),
    ("benefit", "harm"),
    ("beneficial", "harmful"),
    ("promote", "inhibit", "suppress"),
    ("promotes", "inhibits", "suppresses"),
    ("activate", "inhibit", "deactivate"),
    ("activates", "inhibits", "deactivates"),
    ("enable", "disable"),
    ("success", "failure"),
    ("ascending", "descending"),
    ("compress", "decompress"),
    ("serialize", "deserialize"),
    ("import", "export"),
    ("sync", "async", "synchronous", "asynchronous"),
    ("up", "down"),
    ("in", "out"),
    ("over", "under"),
    ("above", "below"),
    ("early", "late"),
    ("earlier", "later"),
    ("older", "younger"),
    ("male", "female"),
    ("men", "women"),
    ("acute", "chronic"),
    ("risk", "protection"),
    ("gain", "loss"),
    ("agonist", "antagonist"),
    ("upregulate", "downregulate"),
    ("upregulates", "downregulates"),
    ("upregulation", "downregulation"),
    ("overexpression", "knockdown", "deletion"),
    ("hyper", "hypo"),
    ("inside", "outside"),
    ("strong", "weak"),
    ("fast", "slow"),
    ("true", "false"),
    ("valid", "invalid"),
    ("sorted", "unsorted"),
    ("with", "without"),
    ("mutable", "immutable"),
    ("absolute", "relative"),
]
POLAR_WORDS = frozenset(w for group in _OPPOSITES for w in group if w not in ("in", "with"))
_IDENTIFIER = re.compile(r"[a-z]+[A-Z]|[_.]|\d")  # camelCase, snake_case, dotted.names, anything with digits


@dataclass(frozen=True, slots=True)
class GuardVerdict:
    compatible: bool
    reason: str = ""


IdfFn = Callable[[str], float | None]


def _words(text: str) -> list[str]:
    return _WORD.findall(text.replace("n't", " not").replace("n’t", " not"))


def _numbers(words: list[str]) -> frozenset[str]:
    found = set()
    for w in words:
        lw = w.lower()
        if any(c.isdigit() for c in lw):
            found.add(lw.rstrip(".").replace(",", ""))
        elif lw in NUMBER_WORDS:
            found.add(lw)
    return frozenset(found)


def _negated(words: list[str]) -> bool:
    return any(w.lower() in NEGATIONS or w.lower().startswith("non-") for w in words)


def _names(words: list[str]) -> frozenset[str]:
    """Words shaped like an identifier, or capitalised anywhere but the first word (a name)."""
    out = set()
    for i, w in enumerate(words):
        if _IDENTIFIER.search(w) or (i > 0 and w[:1].isupper()) or (len(w) > 1 and w.isupper()):
            out.add(w.lower())
    return frozenset(out)


def check(a: str, b: str, analyzer: Analyzer, idf: IdfFn, *, rare_idf: float = 4.0) -> GuardVerdict:
    """Whether the answer to ``a`` may serve ``b`` (their embeddings already being close)."""
    wa, wb = _words(a), _words(b)
    if _negated(wa) != _negated(wb):
        return GuardVerdict(False, "negation differs")
    if _numbers(wa) != _numbers(wb):
        return GuardVerdict(False, "numbers or dates differ")
    pa = {w.lower() for w in wa} & POLAR_WORDS
    pb = {w.lower() for w in wb} & POLAR_WORDS
    if pa != pb:
        return GuardVerdict(False, f"opposite words differ: {sorted(pa ^ pb)}")
    ta, tb = set(analyzer.tokens(a)), set(analyzer.tokens(b))
    names_a = {t for n in _names(wa) for t in analyzer.tokens(n)}
    names_b = {t for n in _names(wb) for t in analyzer.tokens(n)}
    for term in sorted(ta ^ tb):
        if term in names_a or term in names_b:
            return GuardVerdict(False, f"name or identifier {term!r} in one query only")
        value = idf(term)
        if value is not None and value >= rare_idf:
            return GuardVerdict(False, f"specific term {term!r} (idf {value:.1f}) in one query only")
    return GuardVerdict(True)
