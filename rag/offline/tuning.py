"""`rag tune`: choose a collection's BM25 parameters and its fusion, on judged queries or on pseudo-queries.

The queries are a BEIR split's judged queries (``--data DIR --split train``) or, for a collection with no
judgments, pseudo-queries cut out of its own documents (:mod:`rag.offline.pseudo_queries`; their
documents are altered to match in the corpus the queries run against). Then, in two steps:

1. **BM25**: every (k1, b, IDF variant) of :data:`BM25_GRID` ranks the queries; nDCG@10 per query.
2. **Fusion**: with the BM25 chosen in step 1, the BM25 and dense lists (``candidates`` deep, as served)
   are fused by every setting of :func:`fusion_grid` — RRF (k, weights), min-max and distribution-based
   (z-score) fusion at weights from 0.1 to 0.9, and each leg alone.

A step keeps the configured default unless the tuning *procedure* shows a gain on queries it did not
choose on: the queries are split into :data:`FOLDS` folds, a setting is chosen on the other folds and
scored on each, and the per-query gains over the default are bootstrapped (:func:`decide`); only when the
whole 95% interval is above zero does the setting chosen on all queries replace the default. The grid's
winner on the queries alone would be optimistic: the best of many settings on one sample wins partly by
chance. A setting is only chosen (:func:`choose`) if no kind of query (keywords, title, sentence, passage;
or the judged queries) loses more than :data:`KIND_TOLERANCE` with it: a collection's real queries may be
of any of these shapes, and a gain on long queries must not be bought with a loss on short ones.

The result is a :class:`~rag.index.tuning.CollectionTuning`, published as a new index version
(:meth:`rag.index.ingest.Ingestor.retune`); every serving replica follows it.

Ranking here is the served ranking, re-implemented over arrays so that a grid of settings costs seconds:
BM25 over the version's term counts, and exact dense search over its stored vectors (Qdrant's HNSW
answers the same at these sizes), both pooled to documents by their best chunk. A collection above
:data:`MAX_ROWS` chunks is tuned on a sample of its rows (every judged document's rows, then random
ones).
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytrec_eval
import scipy.sparse as sp

from rag.bm25.index import BM25Params
from rag.bm25.scoring import score_terms, top_k, weight_matrix
from rag.config import Settings
from rag.dense.matryoshka import rotate
from rag.fusion import FusionChoice, FusionMethod, fuse
from rag.index.segments import load_vectors
from rag.index.tuning import CollectionTuning
from rag.index.versions import VersionStore
from rag.io.sources import read_qrels, read_queries
from rag.offline.calibration import fit_calibration
from rag.offline.compare import bootstrap_ci
from rag.offline.datasets import dataset_collection, open_dataset
from rag.offline.pseudo_queries import KINDS, PseudoQuery, SourceDoc, altered, make_pseudo_queries
from rag.retrieval.plan import configured_fusion
from rag.retrieval.retrievers import best_chunk_per_doc, deciding_rows
from rag.runtime import Runtime
from rag.types import Hit

log = logging.getLogger(__name__)

BM25_GRID: tuple[BM25Params, ...] = tuple(
    BM25Params(k1=k1, b=b, idf=idf)
    for idf in ("lucene", "okapi")
    for k1 in (0.5, 0.7, 0.9, 1.2, 1.5, 2.0)
    for b in (0.2, 0.3, 0.4, 0.5, 0.6, 0.75, 0.9)
)
RRF_KS = (10, 20, 40, 60, 100)
DENSE_SHARES = tuple(round(0.1 * i, 2) for i in range(1, 10))
FOLDS = 5
RESAMPLES = 2000
KIND_TOLERANCE = 0.005  # a kind of pseudo-query may lose at most this much nDCG@10 for a change to pass
MIN_KIND_QUERIES = 30  # kinds with fewer queries are reported but do not veto
MAX_ROWS = 300_000
NDCG_K = 10


# -- the queries ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class QuerySet:
    qids: list[str]
    texts: list[str]
    qrels: dict[str, dict[str, int]]  # qid → {document key: grade}
    kinds: list[str]  # per query: "labelled" or a pseudo-query kind
    source: str  # for the record: what the queries were
    altered: dict[str, PseudoQuery] = field(default_factory=dict)  # document key → the query cut from it


def labelled_queries(data: Path, split: str, known_docs: set[str]) -> QuerySet:
    """A BEIR folder's judged queries of ``split`` (those with a relevant document in the collection)."""
    qrels_file = data / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise FileNotFoundError(f"{data} has no qrels for split {split!r} (looked for {qrels_file})")
    qrels = read_qrels(qrels_file)
    texts = read_queries(data / "queries.jsonl")
    qids = sorted(q for q, docs in qrels.items() if q in texts and any(d in known_docs for d in docs))
    if not qids:
        raise ValueError(f"no query of {qrels_file} judges a document of this collection")
    return QuerySet(
        qids,
        [texts[q] for q in qids],
        {q: dict(qrels[q]) for q in qids},
        ["labelled"] * len(qids),
        f"labelled: {data.resolve().name}/{split} ({len(qids)} queries)",
    )


def pseudo_queries(runtime: Runtime, n: int, seed: int) -> QuerySet:
    """``n`` pseudo-queries cut from the first chunk of the serving version's documents (the piece is then
    taken out of every chunk of its document that holds it: :func:`build_corpus`)."""
    snapshot = runtime.snapshot
    docs = [SourceDoc(key, chunk.title, chunk.text) for key, chunk in snapshot.first_chunks.items()]

    def rarity(word: str) -> float:
        return max((snapshot.idf(t) or 0.0 for t in snapshot.analyzer.tokens(word)), default=0.0)

    made = make_pseudo_queries(docs, n, random.Random(seed), rarity)
    if not made:
        raise ValueError("no document of this collection is long enough to cut a pseudo-query from")
    kinds = Counter(q.kind for q in made)
    return QuerySet(
        [q.qid for q in made],
        [q.text for q in made],
        {q.qid: {q.doc_key: 1} for q in made},
        [q.kind for q in made],
        "pseudo-queries: " + ", ".join(f"{kinds[k]} {k}" for k in KINDS if kinds[k]),
        {q.doc_key: q for q in made},
    )


# -- the corpus the queries run against -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TuningCorpus:
    tf: sp.csr_matrix  # rows (chunks) × terms
    row_doc: np.ndarray  # the document (index into doc_ids) of each row
    doc_ids: list[str]
    vectors: np.ndarray  # rows × dim, rotated as stored


def build_corpus(runtime: Runtime, queries: QuerySet, rng: np.random.Generator) -> TuningCorpus:
    """The serving version's rows (a sample above :data:`MAX_ROWS`), with each pseudo-query's piece taken
    out of its document's rows: their term counts recounted and their vectors re-embedded."""
    snapshot = runtime.snapshot
    versions = VersionStore(runtime.settings.versions_dir)
    vectors = load_vectors(versions, snapshot.version, snapshot.manifest)
    if vectors is None:
        raise ValueError(
            f"version {snapshot.version} has no stored vectors (written before segments carried them); "
            "any ingest, e.g. of one changed document, writes them"
        )
    if snapshot.rotation is None:
        raise ValueError(f"version {snapshot.version} has no rotation")
    rows = np.arange(len(snapshot.chunks))
    if len(rows) > MAX_ROWS:
        judged = {d for docs in queries.qrels.values() for d in docs}
        must = np.fromiter((c.doc_key in judged for c in snapshot.chunks), dtype=bool, count=len(rows))
        others = rng.choice(np.flatnonzero(~must), size=max(0, MAX_ROWS - int(must.sum())), replace=False)
        rows = np.sort(np.concatenate([np.flatnonzero(must), others]))
    tf = snapshot.terms.tf[rows]
    vecs = np.asarray(vectors[rows], dtype=np.float32)
    changed = [
        (i, altered(snapshot.chunks[r].title, snapshot.chunks[r].text, queries.altered[key]))
        for i, r in enumerate(rows.tolist())
        if (key := snapshot.chunks[r].doc_key) in queries.altered
    ]
    if changed:
        passages = [f"{title}\n{text}" if title else text for _, (title, text) in changed]
        tf = _replace_rows(tf, [i for i, _ in changed], runtime, passages)
        embedded = rotate(runtime.embedder.embed(passages, batch_size=32), snapshot.rotation)
        vecs[[i for i, _ in changed]] = embedded
    doc_of_row = snapshot.chunk_doc[rows]
    used, row_doc = np.unique(doc_of_row, return_inverse=True)
    return TuningCorpus(tf.tocsr(), row_doc, [snapshot.doc_ids[d] for d in used.tolist()], vecs)


def _replace_rows(tf: sp.csr_matrix, rows: list[int], runtime: Runtime, passages: list[str]) -> sp.csr_matrix:
    """``tf`` with ``rows`` recounted from ``passages``, and one column more: a padding term no query has,
    counted in each altered row as often as the piece taken out had terms. So an altered document keeps its
    length for BM25's length normalisation — without it every answer to a pseudo-query would be a
    document made shorter, and large ``b`` (which favours short documents) would win for that reason."""
    term_ids = runtime.snapshot.terms.term_ids
    analyzer = runtime.snapshot.analyzer
    padding = tf.shape[1]
    before = np.asarray(tf.sum(axis=1)).ravel()
    lil = sp.hstack([tf, sp.csr_matrix((tf.shape[0], 1), dtype=tf.dtype)], format="lil")
    for row, passage in zip(rows, passages, strict=True):
        counts = Counter(term_ids[t] for t in analyzer.tokens(passage) if t in term_ids)
        cut = int(before[row]) - sum(counts.values())
        if cut > 0:
            counts[padding] = cut
        lil.rows[row] = sorted(counts)
        lil.data[row] = [counts[t] for t in sorted(counts)]
    return lil.tocsr()


# -- ranking -----------------------------------------------------------------------------------------------
def pool_documents(
    rows: np.ndarray, scores: np.ndarray, row_doc: np.ndarray, doc_ids: Sequence[str], depth: int
) -> list[Hit]:
    """Rows' scores pooled to documents (a document scores its best row), the ``depth`` best documents
    first (ties: the lower document index): the served retrievers' pooling
    (:func:`~rag.retrieval.retrievers.deciding_rows`, :func:`~rag.retrieval.retrievers.best_chunk_per_doc`,
    :func:`~rag.bm25.scoring.top_k`) over the tuning corpus's rows."""
    rows, scores = deciding_rows(rows, scores, row_doc, depth)
    doc_scores, best_row = best_chunk_per_doc(rows, scores, row_doc, len(doc_ids))
    present = np.flatnonzero(best_row >= 0)
    return [
        Hit(doc_ids[d], float(doc_scores[d]), doc_ids[d])
        for d in top_k(doc_scores, depth, candidates=present)
    ]


def bm25_lists(
    corpus: TuningCorpus, params: BM25Params, query_terms: Sequence[tuple[np.ndarray, np.ndarray]], depth: int
) -> list[list[Hit]]:
    weights = weight_matrix(corpus.tf, k1=params.k1, b=params.b, variant=params.idf, epsilon=params.epsilon)
    out = []
    for ids, counts in query_terms:
        scores = score_terms(weights, ids, counts)
        rows = np.flatnonzero(scores)
        out.append(pool_documents(rows, scores[rows], corpus.row_doc, corpus.doc_ids, depth))
    return out


def dense_lists(corpus: TuningCorpus, query_vectors: np.ndarray, depth: int) -> list[list[Hit]]:
    out = []
    fetch = min(len(corpus.vectors), max(depth * 8, 1000))
    for start in range(0, len(query_vectors), 64):
        block = query_vectors[start : start + 64] @ corpus.vectors.T
        for scores in block:
            rows = (
                np.argpartition(-scores, fetch - 1)[:fetch] if fetch < len(scores) else np.arange(len(scores))
            )
            out.append(pool_documents(rows, scores[rows], corpus.row_doc, corpus.doc_ids, depth))
    return out


class Judge:
    """Per-query nDCG@10 of ranked document lists (trec_eval through pytrec_eval, as ``rag eval``)."""

    def __init__(self, queries: QuerySet) -> None:
        self.qids = queries.qids
        self._evaluator = pytrec_eval.RelevanceEvaluator(queries.qrels, {f"ndcg_cut.{NDCG_K}"})

    def ndcg(self, ranked: Sequence[Sequence[str]]) -> np.ndarray:
        run = {
            q: {d: float(len(docs) - i) for i, d in enumerate(docs)}
            for q, docs in zip(self.qids, ranked, strict=True)
            if docs
        }
        found = self._evaluator.evaluate(run) if run else {}
        return np.asarray([found.get(q, {}).get(f"ndcg_cut_{NDCG_K}", 0.0) for q in self.qids])


# -- the decision ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Decision:
    chosen: int  # index of the chosen setting (the default's when not accepted)
    best: int  # the best setting on all queries
    accepted: bool
    gain: tuple[float, float, float]  # cross-fitted gain over the default: (2.5%, mean, 97.5%)
    kind_gain: dict[str, float]
    reason: str


def fold_of(kinds: Sequence[str], folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold per query, each kind spread evenly over the folds."""
    out = np.empty(len(kinds), dtype=np.int64)
    for kind in set(kinds):
        idx = np.flatnonzero(np.asarray(kinds) == kind)
        out[rng.permutation(idx)] = np.arange(idx.size) % folds
    return out


def admissible(scores: np.ndarray, default: int, kinds: Sequence[str]) -> np.ndarray:
    """The settings no kind of query loses with: on each kind with at least :data:`MIN_KIND_QUERIES`
    queries, a mean at most :data:`KIND_TOLERANCE` below the default's. ``scores``: settings × queries."""
    ok = np.ones(scores.shape[0], dtype=bool)
    kind_arr = np.asarray(kinds)
    for kind in np.unique(kind_arr):
        cols = kind_arr == kind
        if int(cols.sum()) >= MIN_KIND_QUERIES:
            ok &= scores[:, cols].mean(axis=1) - scores[default, cols].mean() >= -KIND_TOLERANCE
    return ok


def choose(scores: np.ndarray, default: int, kinds: Sequence[str]) -> int:
    """The admissible setting with the best mean (the first of equals: settings are listed default first)."""
    means = np.where(admissible(scores, default, kinds), scores.mean(axis=1), -np.inf)
    return int(np.argmax(means))


def cross_fitted_gains(
    scores: np.ndarray, default: int, kinds: Sequence[str], folds: np.ndarray
) -> np.ndarray:
    """Per query: the score of the setting chosen (:func:`choose`) on the *other* folds minus the
    default's. ``scores`` is settings × queries."""
    gains = np.empty(scores.shape[1])
    kind_arr = np.asarray(kinds)
    for f in np.unique(folds):
        inside = folds == f
        chosen = (
            choose(scores[:, ~inside], default, kind_arr[~inside].tolist()) if (~inside).any() else default
        )
        gains[inside] = scores[chosen, inside] - scores[default, inside]
    return gains


def decide(scores: np.ndarray, default: int, kinds: Sequence[str], rng: np.random.Generator) -> Decision:
    """Keep ``default`` unless choosing pays on held-out folds (see the module docstring)."""
    best = int(np.argmax(scores.mean(axis=1)))  # the first of equals: settings are listed default first
    chosen = choose(scores, default, kinds)
    gains = cross_fitted_gains(scores, default, kinds, fold_of(kinds, FOLDS, rng))
    lo, hi = bootstrap_ci(gains, resamples=RESAMPLES, seed=int(rng.integers(2**31)))
    interval = (lo, float(gains.mean()), hi)
    kind_arr = np.asarray(kinds)
    kind_gain = {k: float(gains[kind_arr == k].mean()) for k in sorted(set(kinds))}
    held_out = f"gain on held-out folds {interval[1]:+.4f} (95% CI {interval[0]:+.4f}..{interval[2]:+.4f})"
    losers = [
        k
        for k in sorted(set(kinds))
        if int((kind_arr == k).sum()) >= MIN_KIND_QUERIES
        and scores[best, kind_arr == k].mean() - scores[default, kind_arr == k].mean() < -KIND_TOLERANCE
    ]
    passed_over = f"the best on all queries loses on {', '.join(losers)} queries; " if losers else ""
    if chosen == default:
        why = (
            "no other setting does better without a kind of query losing"
            if losers
            else "the default scores best"
        )
        return Decision(default, best, False, interval, kind_gain, passed_over + why)
    if interval[0] <= 0:
        return Decision(default, best, False, interval, kind_gain, f"{passed_over}{held_out} not above 0")
    return Decision(chosen, best, True, interval, kind_gain, passed_over + held_out)


def fusion_grid(default: FusionChoice) -> list[FusionChoice]:
    """The default first, each leg alone, then RRF (k × dense share) and the two score fusions by share."""
    grid = [
        default,
        FusionChoice(FusionMethod.RRF, {"bm25": 1.0, "dense": 0.0}, default.rrf_k),
        FusionChoice(FusionMethod.RRF, {"bm25": 0.0, "dense": 1.0}, default.rrf_k),
    ]
    for k in RRF_KS:
        for share in DENSE_SHARES:
            grid.append(FusionChoice(FusionMethod.RRF, {"bm25": round(1 - share, 2), "dense": share}, k))
    for method in (FusionMethod.MINMAX, FusionMethod.DBSF):
        for share in DENSE_SHARES:
            grid.append(FusionChoice(method, {"bm25": round(1 - share, 2), "dense": share}))
    return grid


def _top_ids(lists: Sequence[Sequence[Hit]]) -> list[list[str]]:
    return [[h.doc_id for h in hits[:NDCG_K]] for hits in lists]


def _fused(choice: FusionChoice, bm25: Sequence[Hit], dense: Sequence[Hit]) -> list[str]:
    lists = {leg: hits for leg, hits in (("bm25", bm25), ("dense", dense)) if choice.weights[leg] > 0}
    weights = {leg: choice.weights[leg] for leg in lists}
    return [h.doc_id for h in fuse(choice.method, lists, weights, rrf_k=choice.rrf_k)[:NDCG_K]]


# -- the whole run ------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TuningRun:
    """The queries run against the altered corpus: everything a grid of settings is scored from."""

    queries: QuerySet
    corpus: TuningCorpus
    judge: Judge
    query_terms: list[tuple[np.ndarray, np.ndarray]]
    query_vectors: np.ndarray  # rotated, as the dense leg searches
    depth: int  # documents per leg (the plan's candidates)

    @classmethod
    def prepare(cls, runtime: Runtime, queries: QuerySet, rng: np.random.Generator) -> TuningRun:
        snapshot = runtime.snapshot
        corpus = build_corpus(runtime, queries, rng)
        assert snapshot.rotation is not None  # build_corpus checked
        term_ids = snapshot.terms.term_ids
        query_terms = []
        for text in queries.texts:
            counts = Counter(t for t in snapshot.analyzer.tokens(text) if t in term_ids)
            query_terms.append(
                (
                    np.fromiter((term_ids[t] for t in counts), dtype=np.int64, count=len(counts)),
                    np.fromiter(counts.values(), dtype=np.float64, count=len(counts)),
                )
            )
        vectors = rotate(runtime.embedder.embed(queries.texts, batch_size=32), snapshot.rotation)
        return cls(queries, corpus, Judge(queries), query_terms, vectors, runtime.settings.candidates)

    def bm25(self, params: BM25Params, depth: int | None = None) -> list[list[Hit]]:
        return bm25_lists(self.corpus, params, self.query_terms, depth or self.depth)

    def dense(self) -> list[list[Hit]]:
        return dense_lists(self.corpus, self.query_vectors, self.depth)

    def bm25_scores(self, grid: Sequence[BM25Params]) -> np.ndarray:
        """nDCG@10 of each setting (rows) on each query (columns)."""
        return np.stack([self.judge.ndcg(_top_ids(self.bm25(p, NDCG_K))) for p in grid])

    def fusion_scores(
        self,
        grid: Sequence[FusionChoice],
        lexical: Sequence[Sequence[Hit]],
        semantic: Sequence[Sequence[Hit]],
    ) -> np.ndarray:
        return np.stack(
            [self.judge.ndcg([_fused(c, b, d) for b, d in zip(lexical, semantic, strict=True)]) for c in grid]
        )


def tune(runtime: Runtime, queries: QuerySet, *, seed: int = 13) -> CollectionTuning:
    """Choose BM25 and then fusion for ``runtime``'s serving version on ``queries``."""
    started = time.perf_counter()
    settings = runtime.settings
    rng = np.random.default_rng(seed)
    run = TuningRun.prepare(runtime, queries, rng)

    default_bm25 = BM25Params(k1=settings.bm25_k1, b=settings.bm25_b, idf=settings.bm25_idf)
    bm25_grid = [default_bm25, *(p for p in BM25_GRID if p != default_bm25)]
    bm25_scores = run.bm25_scores(bm25_grid)
    bm25_decision = decide(bm25_scores, 0, queries.kinds, rng)
    bm25 = bm25_grid[bm25_decision.chosen]
    log.info("BM25: %s (%s)", bm25, bm25_decision.reason)

    grid = fusion_grid(configured_fusion(settings))
    lexical, semantic = run.bm25(bm25), run.dense()
    fusion_scores = run.fusion_scores(grid, lexical, semantic)
    fusion_decision = decide(fusion_scores, 0, queries.kinds, rng)
    chosen = grid[fusion_decision.chosen]
    reason = (
        f"rag tune on {queries.source}: {chosen.label}, {fusion_decision.reason}"
        if fusion_decision.accepted
        else f"rag tune on {queries.source}: kept the default, {fusion_decision.reason}"
    )
    fusion = FusionChoice(chosen.method, dict(chosen.weights), chosen.rrf_k, reason)
    log.info("fusion: %s", reason)
    means = fusion_scores.mean(axis=1)
    top = np.argsort(-means, kind="stable")[:5]
    evidence: dict[str, Any] = {
        "queries": len(queries.qids),
        "kinds": dict(Counter(queries.kinds)),
        "rows": int(run.corpus.tf.shape[0]),
        "seconds": round(time.perf_counter() - started, 1),
        "bm25": _step_evidence(
            bm25_scores, bm25_decision, [f"k1={p.k1:g} b={p.b:g} idf={p.idf}" for p in bm25_grid]
        ),
        "fusion": {
            **_step_evidence(fusion_scores, fusion_decision, [c.label for c in grid]),
            "bm25_alone": round(float(means[1]), 4),
            "dense_alone": round(float(means[2]), 4),
            "top": [{"setting": grid[i].label, "ndcg@10": round(float(means[i]), 4)} for i in top],
        },
    }
    # the confidence scale, fitted on the same queries with the settings just chosen (rag.index.calibration)
    calibration = fit_calibration(
        [queries.qrels[q] for q in queries.qids],
        lexical,
        semantic,
        fusion,
        queries.source,
        str(runtime.snapshot.manifest.get("embedder", "")),
    )
    evidence["calibration"] = {
        legs: {"pairs": n, "relevant": r} for legs, (n, r) in calibration.samples.items()
    }
    return CollectionTuning(bm25, fusion, queries.source, runtime.snapshot.version, evidence, calibration)


def _step_evidence(scores: np.ndarray, decision: Decision, labels: Sequence[str]) -> dict[str, Any]:
    means = scores.mean(axis=1)
    return {
        "default": {"setting": labels[0], "ndcg@10": round(float(means[0]), 4)},
        "best": {"setting": labels[decision.best], "ndcg@10": round(float(means[decision.best]), 4)},
        "chosen": labels[decision.chosen],
        "accepted": decision.accepted,
        "held_out_gain": [round(g, 4) for g in decision.gain],
        "gain_by_kind": {k: round(v, 4) for k, v in decision.kind_gain.items()},
        "reason": decision.reason,
    }


def run_tune(
    settings: Settings,
    *,
    data: Path | None,
    split: str,
    pseudo: int,
    seed: int,
    publish: bool,
    progress: bool = True,
) -> dict[str, Any]:
    """``rag tune``: choose on ``data``'s judged ``split`` queries, or on ``pseudo`` pseudo-queries (no
    labels read), and publish the choice as a new version of the collection unless ``publish`` is off."""
    if data is not None and settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(data, settings)})
    runtime = (
        open_dataset(settings, data, load_reranker=False, progress=progress)
        if data is not None
        else Runtime.open(settings, load_reranker=False)
    )
    try:
        if pseudo:
            queries = pseudo_queries(runtime, pseudo, seed)
        elif data is not None:
            queries = labelled_queries(data, split, set(runtime.snapshot.doc_ids))
        else:
            raise ValueError("rag tune needs judged queries (--data DIR) or --pseudo-queries N")
        tuning = tune(runtime, queries, seed=seed)
        version = runtime.ingestor(progress=progress).retune(tuning.to_json()) if publish else None
    finally:
        runtime.close()
    return {"collection": settings.collection, "published": version, **tuning.to_json()}


def reset_tuning(settings: Settings, data: Path | None) -> dict[str, Any]:
    """``rag tune --reset``: publish a version without a tuning record (the configured defaults again)."""
    if data is not None and settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(data, settings)})
    runtime = Runtime.open(settings, load_reranker=False)
    try:
        version = runtime.ingestor(progress=False).retune(None)
    finally:
        runtime.close()
    return {"collection": settings.collection, "published": version, "tuning": None}
