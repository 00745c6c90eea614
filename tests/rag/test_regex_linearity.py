"""Every regex that can see user text (query text, filter values, headers, document text) does work
linear in the length of its input.

How work is measured (the choice, and why): ``re`` has no step counter and timed assertions are not
allowed, so each pattern runs under :mod:`tests.regex_steps`, a step-counting model of ``_sre``'s
backtracking over the pattern's own parse tree (``re._parser.parse``). Its count is deterministic; the
model has none of ``_sre``'s shortcuts, so it over-counts rather than hides backtracking; and every
measured run is cross-checked against ``re`` (same match spans), so the model cannot misread a pattern
and pass. A regex is linear here when doubling an adversarial input (1k -> 2k characters) grows its
steps at most ``MAX_GROWTH`` times (a quadratic one grows ~4x) and stays within ``STEPS_PER_CHAR`` steps
per character.

Coverage: every compiled module-level pattern in ``rag/`` and ``api/`` is found by import (a new one is
audited without editing this file) and swept with generic families (runs of each character the pattern
names, then a terminator); the table below adds hand-built worst cases for the patterns on the query
path at 1k/2k characters. Inline ``re.sub(...)``-style calls are refused outside ``rag/testing`` and
``rag/eval`` (they would escape the discovery). Patterns given to pydantic (``StringConstraints``,
``Field(pattern=...)``, FastAPI ``Query/Path(pattern=...)``) run on pydantic-core's Rust engine, which
is linear by construction; their module-level copies are compiled with ``re`` and swept here too.
"""

from __future__ import annotations

import importlib
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.regex_steps import WorkExceeded, named_chars, reference, run

REPO = Path(__file__).resolve().parents[2]
MAX_GROWTH = 2.5  # steps(2n) / steps(n); linear work doubles, quadratic work quadruples
STEPS_PER_CHAR = 200  # the budget: a linear pattern here takes a few dozen steps per character
SMALL, LARGE = 1024, 2048
# the generic sweep: many families, so shorter inputs (longer than any bounded repeat, {1,128})
SWEEP_SMALL, SWEEP_LARGE = 256, 512
SWEEP_CHARS = "aA1_ é٣!\n"  # one of each class: letters, digit, word, space, non-ASCII, other digit
SWEEP_TAILS = ("", "a", "1", "!", "\n")
INLINE_ALLOWED = ("rag/testing/", "rag/eval/")  # no user text: test fakes, CLI paths

Builder = Callable[[int], str]


def _discover() -> dict[str, re.Pattern[str]]:
    """``module:attr`` (``module:attr[i]`` inside a list/tuple) -> every compiled pattern in rag/ and api/."""
    found: dict[str, re.Pattern[str]] = {}
    for path in sorted([*(REPO / "rag").rglob("*.py"), *(REPO / "api").rglob("*.py")]):
        if "re.compile" not in path.read_text(encoding="utf-8"):
            continue
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if isinstance(value, re.Pattern) and isinstance(value.pattern, str):
                found[f"{name}:{attr}"] = value
            elif isinstance(value, list | tuple):
                for i, item in enumerate(value):
                    if isinstance(item, re.Pattern) and isinstance(item.pattern, str):
                        found[f"{name}:{attr}[{i}]"] = item
    return found


PATTERNS = _discover()


def _repeat(unit: str, tail: str = "", head: str = "") -> Builder:
    """``head + unit * k + tail`` with about ``n`` characters in all."""
    return lambda n: head + unit * max((n - len(head) - len(tail)) // len(unit), 1) + tail


# hand-built worst cases: (pattern, method as called in the code, input family)
ADVERSARIAL: list[tuple[str, str, Builder]] = [
    # the cache guard: words of a query (a word may be the whole query)
    ("rag.cache.guard:_NUMERAL", "match", _repeat("1", "a")),  # the input: quadratic on main
    ("rag.cache.guard:_NUMERAL", "match", _repeat("1.", "a")),
    ("rag.cache.guard:_NUMERAL", "match", _repeat(".", "a", head="1")),
    ("rag.cache.guard:_NUMERAL", "match", _repeat("1", "%%")),
    ("rag.cache.guard:_IDENTIFIER", "search", _repeat("a")),  # quadratic on main
    ("rag.cache.guard:_IDENTIFIER", "search", _repeat("a", " ")),
    ("rag.cache.guard:_WORD", "findall", _repeat(".", "", head="a")),
    ("rag.cache.guard:_WORD", "findall", _repeat("a.", ".")),
    ("rag.cache.guard:_WORD", "findall", _repeat("é.", "-")),
    # the L1 key
    ("rag.cache.keys:_SPACE", "findall", _repeat(" ", "x")),
    # the query analyzer (routing features)
    ("rag.routing.analyzer:_NUMBER", "search", _repeat("1", "a")),
    ("rag.routing.analyzer:_NUMBER", "search", _repeat("1,", "a")),
    ("rag.routing.analyzer:_NUMBER", "search", _repeat(" 1", "a")),
    ("rag.routing.analyzer:_NUMBER", "search", _repeat("-1", "a")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("a")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("a", "_")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("a ")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("A", "a")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("a-", "_", head="a1")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("1-", "_", head="a")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat(".", "", head="a")),
    ("rag.routing.analyzer:_IDENTIFIER", "search", _repeat("a", "", head="aB")),
    ("rag.routing.analyzer:_QUOTED", "search", _repeat("a", "", head='"')),
    ("rag.routing.analyzer:_QUOTED", "search", _repeat('"a')),
    ("rag.routing.analyzer:_QUOTED", "search", _repeat("'a")),
    ("rag.routing.analyzer:_QUOTED", "search", _repeat("“a")),
    ("rag.routing.analyzer:_STRONG_BREAK", "findall", _repeat(" ", "", head="?")),
    ("rag.routing.analyzer:_CLAUSE_BREAK", "findall", _repeat("compared ")),
    ("rag.routing.analyzer:_CLAUSE_BREAK", "findall", _repeat(" ", "x", head="compared")),
    ("rag.routing.analyzer:_WORD", "findall", _repeat("a")),
    # multi-query decomposition (whitespace is collapsed first, but the pattern is checked raw)
    ("rag.retrieval.multiquery:_SPLITTERS[1]", "findall", _repeat(" ", "x", head="as")),
    ("rag.retrieval.multiquery:_SPLITTERS[1]", "findall", _repeat("as ")),
    ("rag.retrieval.multiquery:_SPLITTERS[2]", "findall", _repeat(" ", "x", head=",")),
    ("rag.retrieval.multiquery:_SPLITTERS[2]", "findall", _repeat(" ", "x", head="and")),
    ("rag.retrieval.multiquery:_SPLITTERS[3]", "findall", _repeat("and ")),
    # BM25 analysis and chunking: query text and document text at ingest
    ("rag.text.analyzer:_TOKEN", "findall", _repeat("a")),
    ("rag.text.chunking:_WS", "findall", _repeat("a ")),
    # identifiers from headers, filters and admin input
    ("api.middleware:_REQUEST_ID", "match", _repeat("a", "!")),
    ("rag.retrieval.filters:_FIELD_RE", "fullmatch", _repeat("a", "!")),
    ("rag.tenancy:_TENANT_RE", "fullmatch", _repeat("a", "!")),
]


def _work(pattern: re.Pattern[str], method: str, text: str) -> int:
    """Model steps of ``pattern.<method>(text)``, after checking the model agrees with ``re``."""
    try:
        steps, spans = run(pattern, method, text, budget=STEPS_PER_CHAR * len(text) + 1_000)
    except WorkExceeded as exc:
        pytest.fail(f"{pattern.pattern!r}.{method} on {text[:12]!r}… ({len(text)} chars): {exc}")
    assert spans == reference(pattern, method, text), f"the model misread {pattern.pattern!r}"
    return steps


def _growth(pattern: re.Pattern[str], method: str, build: Builder, small: int, large: int) -> str | None:
    """None when linear; else what grew."""
    a, b = _work(pattern, method, build(small)), _work(pattern, method, build(large))
    if b > MAX_GROWTH * a:
        return f"{pattern.pattern!r}.{method} on {build(12)!r}…: {a} -> {b} steps ({b / a:.1f}x)"
    return None


@pytest.mark.parametrize(
    ("name", "method", "build"), ADVERSARIAL, ids=lambda v: v if isinstance(v, str) else ""
)
def test_regexes_seeing_user_text_are_linear_on_adversarial_input(
    name: str, method: str, build: Builder
) -> None:
    assert name in PATTERNS, f"{name} is no longer a compiled pattern: update the table"
    problem = _growth(PATTERNS[name], method, build, SMALL, LARGE)
    assert problem is None, problem


def _sweep_families(pattern: re.Pattern[str]) -> Iterator[Builder]:
    """Runs of every character the pattern names and of one per common class, then a terminator."""
    for unit in sorted(named_chars(pattern) | set(SWEEP_CHARS)):
        for tail in SWEEP_TAILS:
            yield _repeat(unit, tail)


def _methods(name: str) -> tuple[str, ...]:
    """``findall`` does the work of ``search``, ``sub``, ``split`` and ``match`` and more; ``fullmatch``
    (whose end anchor is one more way to fail) where the module calls it on this pattern."""
    module, attr = name.split(":")
    source = (REPO / Path(*module.split("."))).with_suffix(".py").read_text(encoding="utf-8")
    return ("findall", "fullmatch") if f"{attr}.fullmatch(" in source else ("findall",)


@pytest.mark.parametrize("name", sorted(PATTERNS))
def test_every_compiled_regex_is_linear_on_character_runs(name: str) -> None:
    pattern = PATTERNS[name]
    problems = [
        problem
        for build in _sweep_families(pattern)
        for method in _methods(name)
        if (problem := _growth(pattern, method, build, SWEEP_SMALL, SWEEP_LARGE))
    ]
    assert not problems, "\n".join(problems)


def test_every_regex_call_is_on_a_compiled_module_level_pattern() -> None:
    """So the discovery above sees every regex: no inline ``re.sub(...)`` where user text goes."""
    inline = re.compile(r"\bre\.(?:match|search|sub|subn|findall|finditer|split|fullmatch)\(")
    offenders = [
        f"{path.relative_to(REPO)}:{i}"
        for path in sorted([*(REPO / "rag").rglob("*.py"), *(REPO / "api").rglob("*.py")])
        if not str(path.relative_to(REPO)).startswith(INLINE_ALLOWED)
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if inline.search(line)
    ]
    assert not offenders, f"compile these at module level so they are audited: {offenders}"


def test_linear_rewrites_accept_what_the_quadratic_patterns_accepted() -> None:
    """The rewrites keep their meaning: the old patterns are the reference, on random short texts."""
    from rag.cache import guard
    from rag.cache.keys import normalize_query

    old_numeral = re.compile(r"^[\d.,:/\-]*\d[\d.,:/\-]*%?$")
    old_identifier = re.compile(r"[a-z]+[A-Z]|[_.]|\d")
    old_trailing, space = re.compile(r"[\s?!.]+$"), re.compile(r"\s+")
    rng = random.Random(12)
    alphabet = "1٣.,:/-%aZ_ ?!\t\u3000é\n"
    for _ in range(20_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
        word = text.replace("\n", "")  # guard words never hold a newline (guard._WORD)
        assert bool(guard._NUMERAL.match(word)) == bool(old_numeral.match(word)), word
        assert bool(guard._IDENTIFIER.search(text)) == bool(old_identifier.search(text)), text
        collapsed = space.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()
        assert normalize_query(text) == old_trailing.sub("", collapsed), text
