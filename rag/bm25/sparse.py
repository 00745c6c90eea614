"""BM25 as Qdrant sparse vectors: the scaled-out lexical index, scored by Qdrant's IDF modifier.

A chunk's vector holds, for each of its terms, the saturated, length-normalised term frequency
``tf (k1 + 1) / (tf + k1 (1 - b + b |d| / avgdl))``; a query's vector holds each term's count. A collection
whose sparse vector has ``modifier=IDF`` multiplies each query value by
``ln(1 + (N - df + 0.5) / (df + 0.5))`` (Lucene's IDF, our default :func:`rag.bm25.scoring.idf_lucene`)
before the dot product, so the score is the BM25 of :class:`rag.bm25.index.BM25Index` — term by term,
the same sum :func:`rag.bm25.scoring.score_terms` computes — as long as three things agree:

- **IDF**: Qdrant computes only Lucene's variant; ``BM25Params(idf="okapi")`` cannot be expressed and is
  refused. ``N`` and ``df`` are counted over the points of the collection that have the sparse vector,
  across tenants (as our index counts every chunk of a version), while our index counts exactly the
  version's rows: points a version no longer uses but garbage collection has not removed yet still count;
  deleted points count in the edge engine until the shard is reopened (measured: ``optimize`` does not
  refresh the statistics) and on a server until its optimizer drops them (qdrant-client's local mode
  drops them at once); a chunk with no indexed term has no vector (the stores skip it), so it is left out
  of ``N`` where our index counts it. A Qdrant server computes the statistics per shard, not per
  collection (Qdrant's docs for 1.19): a collection split into shards ranks with each shard's own N and df,
  so a lexical collection has one shard (QdrantStore creates it so; replicas of it are fine).
- **avgdl**: frozen into each chunk's vector when it is written (``avgdl`` below), while our index
  recomputes it per version. Points are content-addressed and kept across versions, so the writer should
  pick ``avgdl`` once per collection (the first ingest's :func:`mean_length`) and keep it; after the corpus
  drifts, long and short chunks are normalised against the old mean (SciFact, avgdl frozen at half /
  twice the mean: nDCG@10 -0.0006 / -0.0037, benchmarks/results/lexical_parity.md).
- **term ids**: a term is its 32-bit hash (:func:`term_id`, BLAKE2b), so replicas and writers need no
  shared vocabulary; two terms with one hash become one term (their counts and document frequencies
  merge). None among SciFact's 26,565 indexed terms (benchmarks/results/lexical_parity.md); expected
  pairs grow as n²/2³³ (about 116 at a million distinct terms, rare ones mostly).

Values travel as float32 (Qdrant's storage), so scores differ from ours in the 7th digit and exact ties can
break differently.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from rag.bm25.index import BM25Params
from rag.bm25.scoring import saturate
from rag.dense.store import SparseVector

TERM_IDS = "blake2b-32"  # names term_id's scheme in a collection's record: change it, change the name
# The term-id memo: a term is hashed once (corpora repeat terms far more than they add new ones). Bounded
# because query text reaches it; 65,536 ids of short strings is a few MB.
TERM_ID_MEMO = 65_536


@lru_cache(maxsize=TERM_ID_MEMO)
def term_id(term: str) -> int:
    """A term's sparse-vector index: the first 4 bytes of its BLAKE2b digest (stable across processes and
    machines, unlike ``hash()``), an unsigned 32-bit integer as Qdrant's sparse indices are."""
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


def mean_length(token_lists: Iterable[Sequence[str]]) -> float:
    """Mean number of tokens per chunk: the ``avgdl`` to freeze into a collection's vectors."""
    total = count = 0
    for tokens in token_lists:
        total += len(tokens)
        count += 1
    return total / count if count else 0.0


def _hashed_counts(tokens: Sequence[str]) -> Counter[int]:
    counts: Counter[int] = Counter()
    for term, n in Counter(tokens).items():
        counts[term_id(term)] += n  # a collision merges the two terms
    return counts


@dataclass(frozen=True, slots=True)
class SparseEncoder:
    """Turns analysed chunks and queries into sparse vectors whose dot product under Qdrant's IDF
    modifier is BM25 with ``params`` (see the module docstring). ``avgdl``: the mean chunk length the
    length normalisation uses, fixed for the collection (:func:`mean_length`)."""

    params: BM25Params
    avgdl: float

    def __post_init__(self) -> None:
        if self.params.idf != "lucene":
            raise ValueError(
                f"Qdrant's IDF modifier computes the 'lucene' IDF only, got idf={self.params.idf!r}"
            )
        if self.avgdl < 0:
            raise ValueError(f"avgdl must be at least 0, got {self.avgdl}")

    def record(self) -> dict[str, Any]:
        """What the collection's vectors were written with (keep it with the collection, e.g. in the
        version manifest): a writer continues with :meth:`from_record`, never with a new ``avgdl``."""
        return {"k1": self.params.k1, "b": self.params.b, "avgdl": self.avgdl, "term_ids": TERM_IDS}

    @classmethod
    def from_record(cls, record: dict[str, Any], params: BM25Params) -> SparseEncoder:
        """The encoder a collection was written with. Raises ``ValueError`` when ``params`` (the
        settings' k1 and b) or the term-id scheme differ from the record's: its vectors would not be the
        BM25 the settings ask for (re-ingest into a new collection)."""
        written = (record.get("k1"), record.get("b"), record.get("term_ids"))
        if written != (params.k1, params.b, TERM_IDS):
            raise ValueError(
                f"the lexical vectors were written with k1={written[0]}, b={written[1]}, term ids "
                f"{written[2]!r}; the settings ask for k1={params.k1}, b={params.b}, term ids {TERM_IDS!r}: "
                "re-ingest into a new collection"
            )
        return cls(params, float(record["avgdl"]))

    def document(self, tokens: Sequence[str]) -> SparseVector:
        """A chunk's vector: each term's saturated, length-normalised frequency (ids ascending)."""
        counts = _hashed_counts(tokens)
        ids = sorted(counts)
        k1, b = self.params.k1, self.params.b
        norm = 1.0 - b + b * len(tokens) / self.avgdl if self.avgdl > 0 else 1.0
        tf = np.fromiter((counts[i] for i in ids), dtype=np.float64, count=len(ids))
        return SparseVector(ids, saturate(tf, np.full(tf.shape, norm), k1).tolist())

    def documents(self, token_lists: Iterable[Sequence[str]]) -> list[SparseVector]:
        return [self.document(tokens) for tokens in token_lists]

    @staticmethod
    def query(tokens: Sequence[str]) -> SparseVector:
        """A query's vector: each term's count (a repeated term counts twice, as in our BM25)."""
        counts = _hashed_counts(tokens)
        ids = sorted(counts)
        return SparseVector(ids, [float(counts[i]) for i in ids])
