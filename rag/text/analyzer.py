"""Text analysis for BM25: lowercase, split on word characters, drop stopwords, Snowball-stem."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import Stemmer

from rag.text.stopwords import ENGLISH_STOPWORDS

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Analyzer:
    """Turns text into index terms. Stems are memoised: corpora repeat words far more than they add."""

    def __init__(self, *, stopwords: Iterable[str] = ENGLISH_STOPWORDS, stem: bool = True) -> None:
        self.stopwords = frozenset(w.lower() for w in stopwords)
        self._stemmer = Stemmer.Stemmer("english") if stem else None
        self._stem_word = lru_cache(maxsize=500_000)(self._stem_uncached)

    def _stem_uncached(self, word: str) -> str:
        return self._stemmer.stemWord(word) if self._stemmer else word

    def tokens(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower().replace("'", ""))
        stop = self.stopwords
        return [self._stem_word(w) for w in words if w not in stop]

    def fingerprint(self) -> str:
        """Identifies the analysis so an index is never queried with a different analyzer."""
        return f"word-lower-stop{len(self.stopwords)}-{'snowball_en' if self._stemmer else 'nostem'}"
