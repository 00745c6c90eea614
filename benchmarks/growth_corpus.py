"""Synthetic corpora of any size that look like SciFact to the index: its vocabulary, its chunk lengths and
vectors drawn around its real embeddings (used by :mod:`benchmarks.growth`).

Text, exactly: the SciFact corpus (``--data``) is chunked as the ingest chunks it (``chunk_words`` /
``chunk_overlap_words`` of the settings); a synthetic document is one chunk whose word count is drawn from
the empirical distribution of those chunks' word counts, and whose words are drawn independently from the
unigram distribution of SciFact's text words (whitespace tokens, punctuation attached, as they occur); its
title likewise from the titles' word counts and title unigrams. So term frequencies are Zipfian exactly as
SciFact's, document frequencies grow with N as they would for i.i.d. draws (no topical clustering), and
BM25 postings per term scale linearly with N.

Vectors, exactly: the SciFact passages' embeddings (onnx fp32 all-MiniLM-L6-v2, PCA-rotated; the cache of
:func:`benchmarks.edge_scale.embeddings`), then :func:`benchmarks.edge_scale.chunks`: the real vectors first,
then a random real vector plus Gaussian noise of each coordinate's corpus standard deviation × ``noise``,
renormalised. A synthetic document's vector is unrelated to its synthetic text (the timings do not care).
Nothing derived from SciFact is written into the repository: the statistics live in memory only.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.edge_scale import chunks as vector_chunks
from rag.text.chunking import window_bounds
from rag.types import Document, GivenVectors

_WS = re.compile(r"\S+")


@dataclass(frozen=True)
class CorpusStats:
    words: np.ndarray  # vocabulary (object array of str)
    word_p: np.ndarray  # unigram probabilities
    title_words: np.ndarray
    title_p: np.ndarray
    chunk_lengths: np.ndarray  # word counts of the real chunks
    title_lengths: np.ndarray

    @classmethod
    def of(cls, corpus: Path, chunk_words: int, overlap_words: int) -> CorpusStats:
        words: Counter[str] = Counter()
        titles: Counter[str] = Counter()
        lengths: list[int] = []
        title_lengths: list[int] = []
        with corpus.open(encoding="utf-8") as fh:
            for line in fh:
                row = json.loads(line)
                tokens = _WS.findall(row.get("text") or "")
                title = _WS.findall(row.get("title") or "")
                words.update(tokens)
                titles.update(title)
                title_lengths.append(len(title))
                lengths += [e - s for s, e in window_bounds(len(tokens), chunk_words, overlap_words)]
        w, c = zip(*words.most_common(), strict=True)
        tw, tc = zip(*titles.most_common(), strict=True)
        return cls(
            np.asarray(w, dtype=object),
            np.asarray(c, dtype=np.float64) / sum(c),
            np.asarray(tw, dtype=object),
            np.asarray(tc, dtype=np.float64) / sum(tc),
            np.asarray([n for n in lengths if n > 0]),
            np.asarray(title_lengths),
        )


def documents(
    stats: CorpusStats,
    real_vectors: np.ndarray,
    n: int,
    *,
    seed: int = 0,
    noise: float = 0.5,
    start: int = 0,
    prefix: str = "s",
    block: int = 10_000,
) -> Iterator[Document]:
    """``n`` one-chunk documents ``<prefix><start..start+n>`` with given vectors (module docstring)."""
    rng = np.random.default_rng(seed)
    vectors = vector_chunks(real_vectors, n, noise, seed, block)
    i = start
    for rows in vectors:
        lengths = rng.choice(stats.chunk_lengths, len(rows))
        title_lengths = rng.choice(stats.title_lengths, len(rows))
        body = rng.choice(stats.words, int(lengths.sum()), p=stats.word_p)
        title = rng.choice(stats.title_words, int(title_lengths.sum()), p=stats.title_p)
        b = t = 0
        for k, row in enumerate(rows):
            text = " ".join(body[b : b + lengths[k]])
            head = " ".join(title[t : t + title_lengths[k]])
            b, t = b + lengths[k], t + title_lengths[k]
            yield Document(f"{prefix}{i:07d}", text, head, vectors=GivenVectors(row[None, :], "embedding"))
            i += 1
