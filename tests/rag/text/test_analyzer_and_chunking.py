import itertools

import pytest

from rag.text.analyzer import Analyzer
from rag.text.chunking import chunk_document, window_bounds
from rag.types import Document


def test_analyzer_lowercases_drops_stopwords_and_stems() -> None:
    assert Analyzer().tokens("The Running dogs are RUNNING to the parks") == ["run", "dog", "run", "park"]


def test_analyzer_without_stemming_keeps_words() -> None:
    assert Analyzer(stem=False).tokens("Cats and dogs") == ["cats", "dogs"]


def test_analyzer_handles_apostrophes_and_numbers() -> None:
    # "don't" is a stopword with or without its apostrophe
    tokens = Analyzer().tokens("Don't use IL-6 in 2020's trials")
    assert tokens == ["use", "il", "6", "2020s", "trial"]


def test_window_bounds_cover_every_word_with_overlap() -> None:
    bounds = window_bounds(25, size=10, overlap=3)
    assert bounds[0] == (0, 10) and bounds[-1][1] == 25
    covered = set()
    for start, end in bounds:
        assert end - start == 10
        covered.update(range(start, end))
    assert covered == set(range(25))
    for (_s1, e1), (s2, _) in itertools.pairwise(bounds):
        assert e1 - s2 >= 3  # consecutive windows overlap


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (10, 10), (10, -1)])
def test_window_bounds_rejects_bad_parameters(size: int, overlap: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        window_bounds(30, size, overlap)


def test_short_document_is_one_chunk_with_text_intact() -> None:
    doc = Document("d1", "  short   text\nkept as is ", "T")
    (chunk,) = chunk_document(doc, size=50, overlap=5)
    assert (chunk.chunk_id, chunk.doc_id, chunk.text, chunk.title) == ("d1#0", "d1", doc.text, "T")


def test_long_document_chunks_map_back_to_document() -> None:
    words = [f"w{i}" for i in range(100)]
    chunks = chunk_document(Document("long", " ".join(words), "L"), size=30, overlap=10)
    assert [c.chunk_id for c in chunks] == [f"long#{i}" for i in range(len(chunks))]
    assert all(c.doc_id == "long" and c.title == "L" for c in chunks)
    assert chunks[0].text.split()[0] == "w0" and chunks[-1].text.split()[-1] == "w99"


def test_stem_memo_bytes_stay_bounded_after_many_distinct_long_words() -> None:
    """A client can send distinct words of up to 2 KB in every query: what the analyzer keeps (its memo
    and the stemmer's own cache) stays bounded in bytes, whatever it is fed."""
    import gc
    import sys
    import tracemalloc

    from rag.text import analyzer as text_analyzer

    analyzer = Analyzer()
    analyzer.tokens("warm up the stemmer")
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        for i in range(2_000):  # distinct long words: ~2 KB each, a 2,048-character query apiece
            analyzer.tokens(f"w{i}" + "a" * 2_000)
        for i in range(40_000):  # more distinct short words than the memo holds
            analyzer.tokens(f"word{i}x")
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    entry = 2 * sys.getsizeof("x" * text_analyzer.MEMO_WORD_CHARS) + 200  # key, stem, cache bookkeeping
    bound = text_analyzer.MEMO_ENTRIES * entry
    assert retained <= bound, f"{retained:,} bytes retained (bound {bound:,})"
    assert Analyzer().tokens("The Running dogs") == analyzer.tokens("The Running dogs") == ["run", "dog"]
