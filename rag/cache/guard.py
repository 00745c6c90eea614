"""The lexical guard of the semantic cache: two queries whose embeddings are close may still ask different
things. Sentence embeddings barely move for a negation ("does X cause Y" / "does X not cause Y"), a changed
number, date or name, or an opposite word ("increase" / "decrease"); the answer does. Before a semantic hit
is served, the guard compares what embeddings blur:

- negation (``not``, ``no``, ``never``, ``without``, ``n't``…): present in one and not the other → differ;
- numbers (numerals, number words, months, weekdays): the sets must be equal;
- opposite words (a fixed table): one query says "increase" where the other says "decrease";
- substituted subjects: each query has a specific term the other lacks (a rare term in the index, IDF at
  least ``rare_idf``, or a word shaped like a name or identifier), as in "aspirin" → "ibuprofen". A
  specific term on one side only is an elaboration ("… with collections.Counter"), not a conflict.

Everything here is a pure function of the two texts and the index's term statistics.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rag.text.analyzer import Analyzer

# a comma between two digits stays inside the word: "1,000" and "1,5" are one number each
_WORD = re.compile(r"[A-Za-z0-9_](?:[\w.\-]|(?<=\d),(?=\d))*\w|\w")
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?")  # 1,000 or 12,345.6: the commas group digits
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
OPPOSITE_GROUPS = tuple(frozenset(g) for g in _OPPOSITES if not set(g) & {"in", "with"})
# Both see words of the query text, a word up to the whole query: linear by construction (no quantified
# part can be re-split on a failure), checked by tests/rag/test_regex_linearity.py.
# camelCase ("[a-z][A-Z]": any lower-upper pair, a search needs no run before it), snake_case,
# dotted.names, anything with digits
_IDENTIFIER = re.compile(r"[a-z][A-Z]|[_.]|\d")
# a numeral: separators, a first digit, then digits and separators, an optional '%'; the possessive runs
# never give characters back (the runs before the first digit hold no digit, so nothing is lost)
_NUMERAL = re.compile(r"^[.,:/\-]*+\d[\d.,:/\-]*+%?\Z")


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
        if _NUMERAL.match(lw):
            number = lw.rstrip(".")
            # thousands separators go ("1,000" is 1000); any other comma (a decimal comma: "1,5") stays
            found.add(number.replace(",", "") if _THOUSANDS.fullmatch(number) else number)
        elif lw in NUMBER_WORDS:
            found.add(lw)
    return frozenset(found)


def _opposed(a: set[str], b: set[str]) -> list[str]:
    """Words of one opposite group used differently by the two queries (``['decrease', 'increase']``)."""
    for group in OPPOSITE_GROUPS:
        ga, gb = a & group, b & group
        if ga and gb and ga != gb:
            return sorted(ga ^ gb)
    return []


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
    opposed = _opposed({w.lower() for w in wa}, {w.lower() for w in wb})
    if opposed:
        return GuardVerdict(False, f"opposite words: {opposed}")
    ta, tb = set(analyzer.tokens(a)), set(analyzer.tokens(b))
    names = {t for n in _names(wa) | _names(wb) for t in analyzer.tokens(n)}

    def specific(term: str) -> bool:
        if term.isdigit():  # numbers were compared above, as values ("1,000" is the tokens 1 and 000)
            return False
        value = idf(term)
        return term in names or (value is not None and value >= rare_idf)

    only_a = sorted(t for t in ta - tb if specific(t))
    only_b = sorted(t for t in tb - ta if specific(t))
    if only_a and only_b:
        return GuardVerdict(False, f"different subjects: {only_a} vs {only_b}")
    return GuardVerdict(True)
