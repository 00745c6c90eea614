"""A step-counting model of Python's backtracking regex engine, for tests that bound regex *work*.

Why a model: ``re`` exposes no step counter, and wall time is not a test assertion here. This module
interprets the pattern's parse tree (``re._parser.parse``, the tree ``re`` compiles) with the same
backtracking strategy as ``_sre``: leftmost start first, greedy/lazy/possessive repeats, ordered
alternation, atomic groups, look-around. Every attempt to match one node at one position counts as a
step, so a pattern that backtracks quadratically in ``_sre`` does so here, deterministically.

The model is conservative: it has none of ``_sre``'s shortcuts (prefix scans, the literal check after a
single-character repeat), so it may count more than ``_sre`` does, never a different shape of growth for
the constructs it supports. Callers cross-check the model's answer against ``re`` on every input they
measure (:func:`run` returns the spans it found), so a misread pattern cannot pass silently. Constructs
outside the subset used by this project (backreferences, conditionals) raise ``NotImplementedError``.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from re import _constants as C  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

Cont = Callable[[int], bool]
Span = tuple[int, int]


class WorkExceeded(Exception):
    """More steps than the budget allowed."""


# prepared nodes: (kind, ...) with sub-sequences as tuples, single-character tests as predicates
_CHAR, _AT, _BRANCH, _GROUP, _ATOMIC, _LOOK, _REPEAT = range(7)
Node = tuple[Any, ...]


class _Matcher:
    def __init__(self, pattern: re.Pattern[str], text: str, budget: int) -> None:
        tree = _parser.parse(pattern.pattern, pattern.flags)
        flags = tree.state.flags
        self.icase = bool(flags & re.IGNORECASE)
        self.ascii = bool(flags & re.ASCII)
        self.multiline = bool(flags & re.MULTILINE)
        self.dotall = bool(flags & re.DOTALL)
        self.items = self._prepare(tree)
        self.s = text
        self.n = len(text)
        self.steps = 0
        self.budget = budget

    # -- the parse tree, prepared once ----------------------------------------------------------------
    def _prepare(self, sub: Any) -> tuple[Node, ...]:
        return tuple(self._node(op, av) for op, av in sub)

    def _node(self, op: Any, av: Any) -> Node:
        pred = self._single(op, av)
        if pred is not None:
            return (_CHAR, pred)
        if op is C.AT:
            return (_AT, av)
        if op is C.BRANCH:
            return (_BRANCH, tuple(self._prepare(alt) for alt in av[1]))
        if op is C.SUBPATTERN:
            return (_GROUP, self._prepare(av[3]))
        if op is C.ATOMIC_GROUP:
            return (_ATOMIC, self._prepare(av))
        if op in (C.ASSERT, C.ASSERT_NOT):
            direction, sub = av
            lo, hi = sub.getwidth()
            if direction != 1 and lo != hi:
                raise NotImplementedError("variable-width lookbehind")
            return (_LOOK, direction == 1, op is C.ASSERT, self._prepare(sub), lo)
        if op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
            lo, hi, body = av
            body = list(body)
            one = self._single(*body[0]) if len(body) == 1 else None
            return (_REPEAT, op, lo, hi, self._prepare(body), one)
        raise NotImplementedError(f"regex construct {op}")

    # -- characters ---------------------------------------------------------------------------------
    def _word(self, c: str) -> bool:
        if self.ascii and not c.isascii():
            return False
        return c.isalnum() or c == "_"

    def _category(self, cat: Any, c: str) -> bool:
        if cat is C.CATEGORY_DIGIT:
            return c.isdecimal() and (c.isascii() or not self.ascii)
        if cat is C.CATEGORY_NOT_DIGIT:
            return not self._category(C.CATEGORY_DIGIT, c)
        if cat is C.CATEGORY_SPACE:
            return c.isspace() and (c.isascii() or not self.ascii)
        if cat is C.CATEGORY_NOT_SPACE:
            return not self._category(C.CATEGORY_SPACE, c)
        if cat is C.CATEGORY_WORD:
            return self._word(c)
        if cat is C.CATEGORY_NOT_WORD:
            return not self._word(c)
        raise NotImplementedError(f"category {cat}")

    def _variants(self, c: str) -> tuple[str, ...]:
        return (c, c.lower(), c.upper()) if self.icase else (c,)

    def _in(self, items: list[tuple[Any, Any]], c: str) -> bool:
        negate = bool(items) and items[0][0] is C.NEGATE
        found = any(self._in_item(op, av, v) for v in self._variants(c) for op, av in items)
        return found != negate

    def _in_item(self, op: Any, av: Any, c: str) -> bool:
        if op is C.LITERAL:
            return ord(c) == av
        if op is C.RANGE:
            return bool(av[0] <= ord(c) <= av[1])
        return op is C.CATEGORY and self._category(av, c)

    def _single(self, op: Any, av: Any) -> Callable[[str], bool] | None:
        """A predicate for a node that matches exactly one character, else None (memoised by char)."""
        if op is C.LITERAL:
            test: Callable[[str], bool] = lambda c: any(ord(v) == av for v in self._variants(c))  # noqa: E731
        elif op is C.NOT_LITERAL:
            test = lambda c: not any(ord(v) == av for v in self._variants(c))  # noqa: E731
        elif op is C.ANY:
            test = lambda c: self.dotall or c != "\n"  # noqa: E731
        elif op is C.IN:
            test = lambda c: self._in(av, c)  # noqa: E731
        else:
            return None
        memo: dict[str, bool] = {}

        def pred(c: str) -> bool:
            hit = memo.get(c)
            if hit is None:
                hit = memo[c] = test(c)
            return hit

        return pred

    # -- positions ----------------------------------------------------------------------------------
    def _at(self, code: Any, pos: int) -> bool:
        s, n = self.s, self.n
        if code is C.AT_BEGINNING:
            return pos == 0 or (self.multiline and s[pos - 1] == "\n")
        if code is C.AT_BEGINNING_STRING:
            return pos == 0
        if code is C.AT_END:
            if self.multiline and pos < n and s[pos] == "\n":
                return True
            return pos == n or (pos == n - 1 and s[pos] == "\n")
        if code is C.AT_END_STRING:
            return pos == n
        if code in (C.AT_BOUNDARY, C.AT_NON_BOUNDARY):
            before = pos > 0 and self._word(s[pos - 1])
            after = pos < n and self._word(s[pos])
            return (before != after) == (code is C.AT_BOUNDARY)
        raise NotImplementedError(f"anchor {code}")

    # -- matching -----------------------------------------------------------------------------------
    def tick(self) -> None:
        self.steps += 1
        if self.steps > self.budget:
            raise WorkExceeded(f"more than {self.budget} steps")

    def seq(self, items: tuple[Node, ...], i: int, pos: int, k: Cont) -> bool:
        """Match ``items[i:]`` at ``pos``, then the continuation ``k`` (the rest of the pattern)."""
        self.tick()
        if i == len(items):
            return k(pos)
        node = items[i]
        kind = node[0]

        def nxt(p: int) -> bool:
            return self.seq(items, i + 1, p, k)

        if kind == _CHAR:
            return pos < self.n and node[1](self.s[pos]) and nxt(pos + 1)
        if kind == _AT:
            return self._at(node[1], pos) and nxt(pos)
        if kind == _BRANCH:
            return any(self.seq(alt, 0, pos, nxt) for alt in node[1])
        if kind == _GROUP:
            return self.seq(node[1], 0, pos, nxt)
        if kind == _ATOMIC:
            end = self._first_end(node[1], pos)
            return end is not None and nxt(end)
        if kind == _LOOK:
            _, ahead, positive, sub, width = node
            if ahead:
                ok = self._first_end(sub, pos) is not None
            else:
                ok = pos - width >= 0 and self.seq(sub, 0, pos - width, lambda q: q == pos)
            return ok == positive and nxt(pos)
        return self._repeat(node, pos, nxt)

    def _first_end(self, items: tuple[Node, ...], pos: int) -> int | None:
        found: list[int] = []
        return found[0] if self.seq(items, 0, pos, _recorder(found)) else None

    def _repeat(self, node: Node, pos: int, k: Cont) -> bool:
        _, op, lo, hi, body, one = node
        if one is not None:  # one character per iteration: _sre's REPEAT_ONE, a loop, no recursion
            count = 0
            while count < hi and pos + count < self.n:
                self.tick()
                if not one(self.s[pos + count]):
                    break
                count += 1
            if count < lo:
                return False
            if op is C.POSSESSIVE_REPEAT:
                return k(pos + count)
            counts = range(count, lo - 1, -1) if op is C.MAX_REPEAT else range(lo, count + 1)
            for c in counts:
                self.tick()
                if k(pos + c):
                    return True
            return False

        def rep(c: int, p: int, then: Cont) -> bool:
            self.tick()

            def again(q: int) -> bool:  # an empty iteration past the minimum ends the loop (as _sre)
                return (q != p or c < lo) and rep(c + 1, q, then)

            if op is C.MIN_REPEAT:
                if c >= lo and then(p):
                    return True
                return c < hi and self.seq(body, 0, p, again)
            if c < hi and self.seq(body, 0, p, again):
                return True
            return c >= lo and then(p)

        if op is C.POSSESSIVE_REPEAT:
            found: list[int] = []
            if not rep(0, pos, _recorder(found)):
                return False
            return k(found[0])
        return rep(0, pos, k)


def _recorder(found: list[int]) -> Cont:
    """A continuation that accepts at once, noting where (how atomic groups and look-arounds end)."""

    def accept(p: int) -> bool:
        found.append(p)
        return True

    return accept


def run(pattern: re.Pattern[str], method: str, text: str, *, budget: int) -> tuple[int, list[Span]]:
    """(steps, spans of the matches) of ``pattern.<method>(text)`` under the model.

    ``method``: ``match``, ``fullmatch``, ``search`` (one span or none), or ``findall`` (also what
    ``finditer``, ``sub`` and ``split`` do: every non-overlapping match, left to right). Raises
    :class:`WorkExceeded` past ``budget`` steps.
    """
    m = _Matcher(pattern, text, budget)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 50 * len(text) + 10_000))
    try:
        spans: list[Span] = []
        start, allow_empty_at = 0, -1
        while start <= m.n:
            found = None
            for s in [start] if method in ("match", "fullmatch") else range(start, m.n + 1):
                end: list[int] = []

                def accept(p: int, s: int = s, end: list[int] = end, empty_at: int = allow_empty_at) -> bool:
                    if method == "fullmatch" and p != m.n:
                        return False
                    if p == s and s == empty_at:
                        return False  # no second empty match where the previous one was
                    end.append(p)
                    return True

                if m.seq(m.items, 0, s, accept):
                    found = (s, end[0])
                    break
            if found is None:
                break
            spans.append(found)
            if method != "findall":
                break
            start = found[1]
            allow_empty_at = found[1] if found[0] == found[1] else -1  # as re since 3.7
        return m.steps, spans
    finally:
        sys.setrecursionlimit(limit)


def reference(pattern: re.Pattern[str], method: str, text: str) -> list[Span]:
    """What ``re`` itself finds, in the shape :func:`run` returns."""
    if method == "findall":
        return [m.span() for m in pattern.finditer(text)]
    found = getattr(pattern, method)(text)
    return [found.span()] if found else []


def named_chars(pattern: re.Pattern[str]) -> set[str]:
    """The characters a pattern names: its literals and the ends of its ranges (for input families)."""
    out: set[str] = set()

    def walk(sub: Any) -> None:
        for op, av in sub:
            if op in (C.LITERAL, C.NOT_LITERAL):
                out.add(chr(av))
            elif op is C.IN:
                for iop, iav in av:
                    if iop is C.LITERAL:
                        out.add(chr(iav))
                    elif iop is C.RANGE:
                        out.update((chr(iav[0]), chr(iav[1])))
            elif op is C.BRANCH:
                for alt in av[1]:
                    walk(alt)
            elif op is C.SUBPATTERN:
                walk(av[3])
            elif op in (C.ATOMIC_GROUP,):
                walk(av)
            elif op in (C.ASSERT, C.ASSERT_NOT):
                walk(av[1])
            elif op in (C.MAX_REPEAT, C.MIN_REPEAT, C.POSSESSIVE_REPEAT):
                walk(av[2])

    walk(_parser.parse(pattern.pattern, pattern.flags))
    return out
