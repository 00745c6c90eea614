"""`rag feedback export`: one tenant's feedback log as a BEIR folder the trainers read.

Writes ``DIR/queries.jsonl`` (``_id``, ``text``), ``DIR/qrels/train.tsv`` (``query-id  corpus-id  score``
with a header) and, unless told otherwise, ``DIR/corpus.jsonl``: the tenant's documents from the
collection's current index version, so ``rag train-reranker --data DIR`` (and ``rag train-embedder``) can
take it as it is. Corpus ids are the collection's doc ids, exactly as ``/query`` returned them (the
tenant's own namespace). ``meta.json`` says what was counted and dropped.

**Grades** (:func:`event_grades`: one feedback → a grade per doc id, each with the strength of its signal):

- ``relevance`` {doc: 0..3} (strength 3): the grade, rounded (1, 2, 3 are positives; one that rounds to
  0 is a negative);
- ``clicked`` [docs] (strength 2): each clicked doc is 1; the shown docs ranked above the lowest click
  and not clicked are 0 ("skip above": the user saw them and passed); ``[]`` (saw the results, opened
  none): every shown doc is 0;
- ``rating`` 1-5 (strength 1): ≥ 4, the top shown doc is 1; ≤ 2, every shown doc is 0; 3 says nothing.

Docs shown below the last click are not graded (the user may never have looked at them), and neither
are docs a ``relevance`` map leaves out.

**Merging** (:func:`merge_grades`): feedback on the same query text (NFKC, case-folded, whitespace
collapsed) becomes one query, ``fb-<hash of the normalised text>``. For each (query, doc) only the
strongest kind of signal counts (an explicit relevance grade outranks any number of clicks, a click any
rating); the grades of that kind are averaged and rounded half up (a doc clicked once and skipped twice
is 0). **Negatives are kept as grade-0 lines**: an evaluator counts them as judged non-relevant, and a
trainer may take them as hard negatives. A query with no positive after merging is left out (neither
trainer can learn from it: both need a positive per query), as is a doc id no longer in the tenant's
corpus (deleted since); ``meta.json`` counts both.

**Tenant scoping**: only the tenant's log folder is read, an event naming another tenant is skipped,
and the corpus holds only the tenant's documents.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.index.chunk_table import ChunkRecord
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.io.feedback_log import FeedbackEvent, log_root, read_events
from rag.tenancy import check_tenant

RELEVANCE, CLICK, RATING = 3, 2, 1  # signal strengths: a stronger kind of signal overrides a weaker one
GOOD_RATING, BAD_RATING = (
    4.0,
    2.0,
)  # rating ≥ 4: the top doc is a (weak) positive; ≤ 2: every shown doc is not
MAX_GRADE = 3
_WS = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Graded:
    grade: int
    strength: int


def normalise(query: str) -> str:
    """The form under which two feedbacks are on the same query."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", query).casefold()).strip()


def query_id(query: str) -> str:
    return "fb-" + hashlib.sha256(normalise(query).encode("utf-8")).hexdigest()[:16]


def event_grades(event: FeedbackEvent) -> dict[str, Graded]:
    """Each doc id this feedback says something about, with its grade and the strength of the signal
    (the strongest signal of the event wins per doc; see the module's table)."""
    out: dict[str, Graded] = {}

    def put(doc: str, grade: int, strength: int) -> None:
        if doc not in out or out[doc].strength < strength:
            out[doc] = Graded(grade, strength)

    shown = list(dict.fromkeys(event.shown))  # rank order, a repeated id once
    if event.rating is not None and shown:
        if event.rating >= GOOD_RATING:
            put(shown[0], 1, RATING)
        elif event.rating <= BAD_RATING:
            for doc in shown:
                put(doc, 0, RATING)
    if event.clicked is not None:
        clicked = set(event.clicked)
        ranks = [i for i, doc in enumerate(shown) if doc in clicked]
        examined = shown[: max(ranks) + 1] if ranks else (shown if not clicked else [])
        for doc in examined:
            if doc not in clicked:
                put(doc, 0, CLICK)
        for doc in event.clicked:
            put(doc, 1, CLICK)
    if event.relevance is not None:
        for doc, value in event.relevance.items():
            put(doc, min(MAX_GRADE, max(0, int(value + 0.5))), RELEVANCE)
    return out


def merge_grades(per_event: Iterable[Mapping[str, Graded]]) -> dict[str, int]:
    """One grade per doc from several feedbacks on one query: the strongest kind of signal only, its
    grades averaged and rounded half up."""
    best: dict[str, tuple[int, list[int]]] = {}
    for grades in per_event:
        for doc, g in grades.items():
            strength, values = best.get(doc, (0, []))
            if g.strength > strength:
                best[doc] = (g.strength, [g.grade])
            elif g.strength == strength:
                values.append(g.grade)
    return {doc: int(sum(v) / len(v) + 0.5) for doc, (_, v) in best.items()}


@dataclass(frozen=True, slots=True)
class TrainingSet:
    queries: dict[str, str]  # query id -> text (the first seen form)
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade (0 = judged not relevant)
    counts: dict[str, int]


def training_set(events: Iterable[FeedbackEvent], known_docs: Sequence[str] | None = None) -> TrainingSet:
    """Queries and graded qrels from feedback events (one tenant's). ``known_docs``: the corpus's doc
    ids; a judged doc outside it is dropped (None: keep every doc)."""
    known = None if known_docs is None else set(known_docs)
    texts: dict[str, str] = {}
    grouped: dict[str, list[dict[str, Graded]]] = {}
    counts = {"events": 0, "events_without_query": 0}
    for event in events:
        counts["events"] += 1
        if not event.query.strip():
            counts["events_without_query"] += 1
            continue
        qid = query_id(event.query)
        texts.setdefault(qid, event.query)
        grouped.setdefault(qid, []).append(event_grades(event))
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    dropped_docs = without_positive = 0
    for qid in sorted(grouped):
        grades = merge_grades(grouped[qid])
        if known is not None:
            dropped_docs += sum(1 for d in grades if d not in known)
            grades = {d: g for d, g in grades.items() if d in known}
        if not any(g > 0 for g in grades.values()):
            without_positive += 1
            continue
        queries[qid] = texts[qid]
        qrels[qid] = dict(sorted(grades.items()))
    counts |= {
        "queries": len(queries),
        "queries_without_positive": without_positive,
        "positives": sum(1 for q in qrels.values() for g in q.values() if g > 0),
        "negatives": sum(1 for q in qrels.values() for g in q.values() if g == 0),
        "judgments_of_unknown_docs": dropped_docs,
    }
    return TrainingSet(queries, qrels, counts)


def document_text(chunks: Sequence[ChunkRecord], overlap: int | None = None) -> str:
    """A document's text from its chunks (any order): one chunk is the text as ingested. A longer
    document's chunks are word windows (whitespace between words becomes one space) overlapping by
    ``overlap`` words (the manifest's ``chunk_overlap_words``), the last one pulled back to end at the
    last word: each middle window adds its words past the first ``overlap``, the last one its words past
    the longest run that repeats the end of the text so far (at least ``overlap`` words when given)."""
    ordered = sorted(chunks, key=lambda c: c.ordinal)
    if len(ordered) == 1:
        return ordered[0].text
    words = ordered[0].text.split()
    for i, chunk in enumerate(ordered[1:], start=1):
        nxt = chunk.text.split()
        if overlap is not None and i < len(ordered) - 1:
            words += nxt[overlap:]
            continue
        least = 1 if overlap is None else overlap
        repeat = next(
            (k for k in range(min(len(words), len(nxt)), least - 1, -1) if words[-k:] == nxt[:k]), 0
        )
        words += nxt[repeat:]
    return " ".join(words)


def tenant_documents(snapshot: IndexSnapshot, tenant: str) -> dict[str, dict[str, Any]]:
    """The tenant's documents of a snapshot as BEIR corpus rows, by doc id (snapshot order)."""
    overlap = snapshot.manifest.get("chunk_overlap_words")
    by_doc: dict[str, list[ChunkRecord]] = {}
    for chunk in snapshot.chunks:
        if chunk.tenant == tenant:
            by_doc.setdefault(chunk.doc_id, []).append(chunk)
    rows = {}
    for doc_id, chunks in by_doc.items():
        row: dict[str, Any] = {
            "_id": doc_id,
            "title": chunks[0].title,
            "text": document_text(chunks, overlap),
        }
        if chunks[0].metadata:
            row["metadata"] = chunks[0].metadata
        rows[doc_id] = row
    return rows


CORPUS_SNAPSHOT, CORPUS_NONE = "snapshot", "none"


def export(settings: Settings, tenant: str, output: Path, *, corpus: str = CORPUS_SNAPSHOT) -> dict[str, Any]:
    """Write ``tenant``'s feedback as a BEIR folder under ``output`` and say what it holds. ``corpus``:
    ``snapshot`` (the tenant's documents of the collection's current version), ``none`` (no
    corpus.jsonl: doc ids are not checked), or the path of a corpus.jsonl to link (e.g. the file the
    collection was ingested from: the exact text)."""
    check_tenant(tenant)
    events = list(read_events(log_root(settings.data_dir, settings.collection), tenant))
    docs: dict[str, dict[str, Any]] | None = None
    version = None
    if corpus == CORPUS_SNAPSHOT:
        snapshot = IndexSnapshot.load(VersionStore(settings.versions_dir))
        if snapshot is None:
            raise FileNotFoundError(
                f"collection {settings.collection!r} has no published index under {settings.versions_dir}"
            )
        docs, version = tenant_documents(snapshot, tenant), snapshot.version
    elif corpus != CORPUS_NONE and not Path(corpus).is_file():
        raise FileNotFoundError(f"--corpus {corpus}: no such file (or say 'snapshot' or 'none')")
    data = training_set(events, None if docs is None else list(docs))
    (output / "qrels").mkdir(parents=True, exist_ok=True)
    with (output / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in data.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}, ensure_ascii=False) + "\n")
    with (output / "qrels" / "train.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, grades in data.qrels.items():
            for doc, grade in grades.items():
                fh.write(f"{qid}\t{doc}\t{grade}\n")
    corpus_file = output / "corpus.jsonl"
    if corpus_file.is_symlink() or corpus_file.exists():
        corpus_file.unlink()
    if docs is not None:
        with corpus_file.open("w", encoding="utf-8") as fh:
            for row in docs.values():
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    elif corpus != CORPUS_NONE:
        os.symlink(Path(corpus).resolve(), corpus_file)
    report = {
        "tenant": tenant,
        "collection": settings.collection,
        "index_version": version,
        "corpus": corpus if corpus in (CORPUS_SNAPSHOT, CORPUS_NONE) else str(Path(corpus).resolve()),
        "corpus_documents": None if docs is None else len(docs),
        "output": str(output.resolve()),
        **data.counts,
    }
    (output / "meta.json").write_text(json.dumps(report, indent=2))
    return report
