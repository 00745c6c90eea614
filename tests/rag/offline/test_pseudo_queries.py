"""Pseudo-queries: a piece cut out of one document, that document (without it) as the answer."""

import random

import pytest

from rag.offline.pseudo_queries import KINDS, SourceDoc, altered, make_pseudo_queries, split_sentences


def _doc(i: int, sentences: int = 8) -> SourceDoc:
    body = " ".join(
        f"Sentence {s} of document {i} talks about topic{i} and idea{s} with several more words here."
        for s in range(sentences)
    )
    return SourceDoc(f"d{i}", f"A title for document {i}", body)


def test_split_sentences() -> None:
    assert split_sentences("One two. Three four? Five! 6 is a digit. lower case. (Bracket) here") == [
        "One two.",
        "Three four?",
        "Five!",
        "6 is a digit. lower case.",
        "(Bracket) here",
    ]


def test_kinds_take_turns_one_query_per_document() -> None:
    docs = [_doc(i) for i in range(30)]
    made = make_pseudo_queries(docs, 12, random.Random(1))
    assert len(made) == 12
    assert [q.kind for q in made] == [KINDS[i % 4] for i in range(12)]
    assert len({q.doc_key for q in made}) == 12  # one per document
    assert len({q.qid for q in made}) == 12


def test_the_piece_is_taken_out_of_its_document() -> None:
    docs = {d.key: d for d in (_doc(i) for i in range(9))}
    for q in make_pseudo_queries(list(docs.values()), 9, random.Random(2)):
        doc = docs[q.doc_key]
        title, text = altered(doc.title, doc.text, q)
        if q.kind == "title":
            assert q.text == doc.title and title == "" and text == doc.text
        elif q.kind == "keywords":
            assert len(q.text.split()) == 3 and q.removed in doc.text and q.removed not in text
            assert all(w in q.removed for w in q.text.split())
        else:
            assert q.text in doc.text and q.text not in text and title == doc.title
            assert len(text.split()) >= 20


def test_keywords_are_the_rarest_words_of_the_sentence_in_their_order() -> None:
    short = "Plain words are here now. " * 5  # too short to be picked: the Zeta sentence is
    doc = SourceDoc("d", "", short + "Zeta alpha beta gamma delta omega kappa.")
    rarity = {"Zeta": 5.0, "omega": 4.0, "kappa": 3.0}
    [query] = make_pseudo_queries([doc], 1, random.Random(0), lambda w: rarity.get(w, 0.0))
    assert query.kind == "keywords" and query.text == "Zeta omega kappa"
    assert query.removed == "Zeta alpha beta gamma delta omega kappa."


def test_kind_a_document_cannot_give_passes_its_turn() -> None:
    untitled = [SourceDoc(f"d{i}", "", _doc(i).text) for i in range(10)]
    made = make_pseudo_queries(untitled, 10, random.Random(3))
    assert made and all(q.kind != "title" for q in made)
    short = [SourceDoc("s", "Short title words here", "Too short. To cut.")]
    assert make_pseudo_queries(short, 5, random.Random(3)) == []


def test_seeded() -> None:
    docs = [_doc(i) for i in range(20)]
    assert make_pseudo_queries(docs, 8, random.Random(5)) == make_pseudo_queries(docs, 8, random.Random(5))
    with pytest.raises(ValueError, match="at least 1"):
        make_pseudo_queries(docs, 0, random.Random(5))
