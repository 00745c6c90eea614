"""Pseudo-queries: judged queries made from a collection's own documents, for tuning without labels.

Each pseudo-query is a piece *taken out* of one document, with that document (minus the piece) as its one
relevant answer — the inverse cloze task. Taking the piece out matters: a sentence still inside its
document is found by an exact lexical match, which would make BM25 look far better than it is on real
queries and tilt every fusion choice towards it. Three kinds, so that the choice is not tuned to one query
shape (a collection's real queries may be keyword-short or paragraph-long):

* ``keywords`` — the three rarest words (highest IDF) of one sentence, the sentence taken out: what a user
  types into a search box;
* ``title`` — the document's title (3+ words), the document without its title line: short, name-like;
* ``sentence`` — one sentence of 6–40 words from the body: a claim- or question-length query;
* ``passage`` — two or three consecutive sentences (30+ words): a long, argument-like query.

The kinds share the queries evenly where the documents allow (a corpus without titles gets none of the
first kind). Pure functions over plain values; :mod:`rag.offline.tuning` builds the altered corpus.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

KINDS = ("keywords", "title", "sentence", "passage")
KEYWORDS = 3
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9(\"'\[])")
_WORD = re.compile(r"[\w-]+")
MIN_TITLE_WORDS = 3
SENTENCE_WORDS = (6, 40)
PASSAGE_MIN_WORDS = 30
MIN_LEFT_WORDS = 20  # what must remain of the document once the piece is out


@dataclass(frozen=True, slots=True)
class SourceDoc:
    key: str  # the tenant-scoped document id
    title: str
    text: str  # the body (the title not included)


@dataclass(frozen=True, slots=True)
class PseudoQuery:
    qid: str
    text: str
    doc_key: str  # its one relevant document
    kind: str  # one of KINDS
    removed: str  # what is taken out of the document's body ("" for a title query: the title goes)


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (a full stop, question or exclamation mark, then whitespace and a capital,
    digit, quote or bracket), stripped; good enough for choosing pieces, not for linguistics."""
    return [s.strip() for s in _SENTENCE_END.split(text.strip()) if s.strip()]


def _words(text: str) -> int:
    return len(text.split())


def _title_query(doc: SourceDoc) -> tuple[str, str] | None:
    if _words(doc.title) >= MIN_TITLE_WORDS and _words(doc.text) >= MIN_LEFT_WORDS:
        return doc.title, ""
    return None


def _sentence_query(doc: SourceDoc, rng: random.Random) -> tuple[str, str] | None:
    sentences = split_sentences(doc.text)
    lo, hi = SENTENCE_WORDS
    fits = [s for s in sentences if lo <= _words(s) <= hi]
    if len(sentences) < 3 or not fits:
        return None
    chosen = rng.choice(fits)
    return (chosen, chosen) if _words(doc.text) - _words(chosen) >= MIN_LEFT_WORDS else None


def _keywords_query(
    doc: SourceDoc, rng: random.Random, rarity: Callable[[str], float]
) -> tuple[str, str] | None:
    made = _sentence_query(doc, rng)
    if made is None:
        return None
    sentence = made[1]
    words = _WORD.findall(sentence)
    rarest = set(sorted(range(len(words)), key=lambda i: (-rarity(words[i]), i))[:KEYWORDS])
    return " ".join(w for i, w in enumerate(words) if i in rarest), sentence


def _passage_query(doc: SourceDoc, rng: random.Random) -> tuple[str, str] | None:
    sentences = split_sentences(doc.text)
    if len(sentences) < 5:
        return None
    size = rng.choice((2, 3))
    start = rng.randrange(0, len(sentences) - size + 1)
    piece = " ".join(sentences[start : start + size])
    if _words(piece) < PASSAGE_MIN_WORDS or _words(doc.text) - _words(piece) < MIN_LEFT_WORDS:
        return None
    return piece, piece


def make_pseudo_queries(
    docs: Sequence[SourceDoc], n: int, rng: random.Random, rarity: Callable[[str], float] = len
) -> list[PseudoQuery]:
    """Up to ``n`` pseudo-queries, one per document, the kinds taking turns (a kind a document cannot give
    passes its turn to the next). ``rarity`` ranks a word for the keyword kind (the collection's IDF of it;
    by default its length). Documents are visited in a seeded random order (of their keys: the same
    queries whatever order the index holds them in)."""
    if n < 1:
        raise ValueError(f"the number of pseudo-queries must be at least 1, got {n}")
    order = sorted(docs, key=lambda d: d.key)
    rng.shuffle(order)
    out: list[PseudoQuery] = []
    turn = 0
    for doc in order:
        if len(out) >= n:
            break
        for step in range(len(KINDS)):
            kind = KINDS[(turn + step) % len(KINDS)]
            made = (
                _keywords_query(doc, rng, rarity)
                if kind == "keywords"
                else _title_query(doc)
                if kind == "title"
                else _sentence_query(doc, rng)
                if kind == "sentence"
                else _passage_query(doc, rng)
            )
            if made is not None:
                query, removed = made
                out.append(PseudoQuery(f"pseudo-{len(out)}", query, doc.key, kind, removed))
                turn = (turn + step + 1) % len(KINDS)
                break
    return out


def altered(title: str, text: str, query: PseudoQuery) -> tuple[str, str]:
    """One chunk of ``query``'s document (its ``title`` and ``text``) with the query's piece taken out."""
    if query.kind == "title":
        return "", text
    return title, " ".join(text.replace(query.removed, " ").split())
