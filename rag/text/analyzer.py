"""Text analysis for BM25: lowercase, split on word characters, drop stopwords, Snowball-stem."""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache

import Stemmer

from rag.text.stopwords import ENGLISH_STOPWORDS

_TOKEN = re.compile(r"\w+", re.UNICODE)

# The stem memo's bounds: it sees query text, so a client decides what is offered to it. Words longer
# than MEMO_WORD_CHARS are stemmed every time (rare in text; a client's padding), and at most MEMO_ENTRIES
# words are kept (least recently used out): at most ~6 MB per analyzer (tests/rag/text/
# test_analyzer_and_chunking.py). On SciFact (1.17M tokens, 36k distinct words) 16,384 entries still
# serve 95.8% of the stems from the memo (500,000 entries: 96.9%).
MEMO_WORD_CHARS = 32
MEMO_ENTRIES = 16_384


class Analyzer:
    """Turns text into index terms. Stems of words up to ``MEMO_WORD_CHARS`` are memoised (at most
    ``MEMO_ENTRIES``): corpora repeat words far more than they add."""

    def __init__(self, *, stopwords: Iterable[str] = ENGLISH_STOPWORDS, stem: bool = True) -> None:
        self.stopwords = frozenset(w.lower() for w in stopwords)
        # the stemmer's own cache (10,000 words of any length) is off: the memo below replaces it
        self._stemmer = Stemmer.Stemmer("english", 0) if stem else None
        self._stem_memo = lru_cache(maxsize=MEMO_ENTRIES)(self._stem_uncached)

    def _stem_uncached(self, word: str) -> str:
        return self._stemmer.stemWord(word) if self._stemmer else word

    def tokens(self, text: str) -> list[str]:
        words = _TOKEN.findall(text.lower().replace("'", ""))
        stop, memo, stem = self.stopwords, self._stem_memo, self._stem_uncached
        return [memo(w) if len(w) <= MEMO_WORD_CHARS else stem(w) for w in words if w not in stop]

    def fingerprint(self) -> str:
        """Identifies the analysis so an index is never queried with a different analyzer."""
        return f"word-lower-stop{len(self.stopwords)}-{'snowball_en' if self._stemmer else 'nostem'}"
