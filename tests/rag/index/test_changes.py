from rag.index.ingest import diff_documents
from rag.index.snapshot import ChunkRecord


def rec(doc: str, n: int, point: str) -> ChunkRecord:
    return ChunkRecord(f"{doc}#{n}", doc, n, "", "", point, {})


def test_diff_documents_classifies_by_chunk_content() -> None:
    before = [rec("a", 0, "pa"), rec("b", 0, "pb0"), rec("b", 1, "pb1"), rec("c", 0, "pc"), rec("d", 0, "pd")]
    after = [rec("a", 0, "pa"), rec("b", 0, "pb0"), rec("b", 1, "pb1-new"), rec("e", 0, "pe")]
    changes = diff_documents(before, after, {"c", "zzz"})
    assert changes.unchanged == {"a"}
    assert changes.updated == {"b"}
    assert changes.added == {"e"}
    assert changes.deleted == {"c"} and changes.missing_for_delete == {"zzz"}
    assert changes.replaced == {"b", "c", "e"}  # "d" is neither re-sent nor deleted: it stays
    assert changes.any_change


def test_same_documents_in_any_order_are_no_change() -> None:
    before = [rec("a", 0, "pa"), rec("a", 1, "pa1")]
    changes = diff_documents(before, list(reversed(before)), set())
    assert not changes.any_change and changes.unchanged == {"a"}
