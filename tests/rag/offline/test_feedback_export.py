"""Feedback → qrels grades: one event's grades by signal, merging feedback on one query, a document's
text from its chunks."""

from __future__ import annotations

import random

from rag.index.chunk_table import ChunkRecord
from rag.io.feedback_log import FeedbackEvent
from rag.offline.feedback_export import (
    CLICK,
    RATING,
    RELEVANCE,
    Graded,
    document_text,
    event_grades,
    merge_grades,
    normalise,
    query_id,
    training_set,
)
from rag.text.chunking import chunk_document
from rag.types import Document

SHOWN = ("d1", "d2", "d3", "d4", "d5")


def fb(query: str = "q", **signals: object) -> FeedbackEvent:
    return FeedbackEvent(tenant="acme", request_id="r", query=query, shown=SHOWN, **signals)  # type: ignore[arg-type]


def grades(event: FeedbackEvent) -> dict[str, int]:
    return {d: g.grade for d, g in event_grades(event).items()}


def test_a_click_is_a_positive_and_the_docs_skipped_above_it_negatives() -> None:
    assert grades(fb(clicked=("d3",))) == {"d1": 0, "d2": 0, "d3": 1}  # d4, d5: maybe never seen
    assert grades(fb(clicked=("d1",))) == {"d1": 1}
    assert grades(fb(clicked=("d2", "d4"))) == {"d1": 0, "d2": 1, "d3": 0, "d4": 1}
    assert grades(fb(clicked=())) == dict.fromkeys(SHOWN, 0)  # saw the results, opened none
    assert all(g.strength == CLICK for g in event_grades(fb(clicked=("d3",))).values())


def test_relevance_grades_are_rounded_and_only_the_judged_docs_count() -> None:
    assert grades(fb(relevance={"d2": 2.6, "d5": 0.2, "d9": 1.5})) == {"d2": 3, "d5": 0, "d9": 2}


def test_a_rating_says_little_top_doc_if_good_every_shown_doc_if_bad() -> None:
    assert grades(fb(rating=5.0)) == {"d1": 1}
    assert grades(fb(rating=4.0)) == {"d1": 1}
    assert grades(fb(rating=3.0)) == {}
    assert grades(fb(rating=1.0)) == dict.fromkeys(SHOWN, 0)
    assert {g.strength for g in event_grades(fb(rating=1.0)).values()} == {RATING}


def test_the_strongest_signal_of_one_event_wins_per_doc() -> None:
    event = fb(rating=1.0, clicked=("d2",), relevance={"d2": 3.0})
    assert grades(event) == {"d1": 0, "d2": 3, "d3": 0, "d4": 0, "d5": 0}
    assert event_grades(event)["d2"].strength == RELEVANCE


def test_merging_keeps_the_strongest_kind_and_averages_it() -> None:
    clicked, skipped = Graded(1, CLICK), Graded(0, CLICK)
    assert merge_grades([{"a": clicked}, {"a": skipped}, {"a": skipped}]) == {"a": 0}  # 1 of 3: 0
    assert merge_grades([{"a": clicked}, {"a": skipped}]) == {"a": 1}  # half: rounded up
    assert merge_grades([{"a": Graded(0, RELEVANCE)}, {"a": clicked}, {"a": clicked}]) == {"a": 0}
    assert merge_grades([{"a": Graded(1, RATING)}, {"a": skipped}]) == {"a": 0}


def test_one_query_per_normalised_text_and_queries_without_a_positive_left_out() -> None:
    assert normalise("  Who HUNTS\tmice ") == "who hunts mice"
    assert query_id("Who hunts mice") == query_id("who  hunts mice")
    events = [
        fb("Who hunts mice", clicked=("d2",)),
        fb("who hunts  mice", clicked=("d2",)),
        fb("bad answer", rating=1.0),  # only negatives: nothing to learn from
        fb("", clicked=("d1",)),  # a decision kept without its text
        fb("gone", relevance={"d9": 3.0, "d1": 1.0}),
    ]
    data = training_set(events, known_docs=["d1", "d2", "d3", "d4", "d5"])
    mice, gone = query_id("who hunts mice"), query_id("gone")
    assert data.queries == {gone: "gone", mice: "Who hunts mice"} or data.queries == {
        mice: "Who hunts mice",
        gone: "gone",
    }
    assert data.qrels[mice] == {"d1": 0, "d2": 1}
    assert data.qrels[gone] == {"d1": 1}  # d9 is no longer in the corpus
    assert data.counts == {
        "events": 5,
        "events_without_query": 1,
        "queries": 2,
        "queries_without_positive": 1,
        "positives": 2,
        "negatives": 1,
        "judgments_of_unknown_docs": 1,
    }


def test_a_document_is_rebuilt_from_its_overlapping_chunks() -> None:
    rng = random.Random(3)
    text = " ".join(rng.choice(["mice", "owl", "cat", "night", "hunt"]) for _ in range(530))
    doc = Document("d", text, "Title")
    chunks = [
        ChunkRecord(c.chunk_id, c.doc_id, c.ordinal, c.title, c.text, "p", {})
        for c in chunk_document(doc, size=200, overlap=50)
    ]
    assert len(chunks) == 4  # windows at 0, 150, 300 and the last pulled back to 330
    assert document_text(list(reversed(chunks)), overlap=50) == text
    one = chunk_document(Document("s", "short  text\nkept as is", ""), size=200, overlap=50)
    assert document_text([ChunkRecord("s#0", "s", 0, "", one[0].text, "p", {})]) == "short  text\nkept as is"
