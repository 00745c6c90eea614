"""Reading documents to ingest: BEIR JSONL corpora and folders of text / markdown files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from rag.acl import AclError, check_acl
from rag.errors import RagError
from rag.types import Document, GivenVectors

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown", ".rst"})


class SourceError(RagError, ValueError):
    """Input that cannot be ingested; the message names the file, line and field."""


def read_beir_jsonl(path: Path) -> Iterator[Document]:
    """Documents from a BEIR ``corpus.jsonl`` (``_id``, ``text``, optional ``title``, ``metadata``, ``acl``
    (who may see it: :mod:`rag.acl`) and vectors computed elsewhere: ``embedding`` for a one-chunk
    document or ``embeddings``, one per chunk; see :mod:`rag.index.given_vectors`, which checks them)."""
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SourceError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise SourceError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
            doc_id, text = row.get("_id"), row.get("text")
            if not isinstance(doc_id, str | int) or str(doc_id).strip() == "":
                raise SourceError(f"{path}:{line_no}: field '_id' must be a non-empty string, got {doc_id!r}")
            if not isinstance(text, str):
                raise SourceError(
                    f"{path}:{line_no}: field 'text' must be a string, got {type(text).__name__}"
                )
            title = row.get("title") or ""
            metadata = row.get("metadata") or {}
            if not isinstance(title, str) or not isinstance(metadata, dict):
                raise SourceError(f"{path}:{line_no}: 'title' must be a string and 'metadata' an object")
            where = f"{path}:{line_no}"
            yield Document(
                str(doc_id), text, title, metadata, vectors=_given(row, where), acl=_acl(row, where)
            )


def _acl(row: dict[str, object], where: str) -> tuple[str, ...]:
    """The document's ``acl`` (rag.acl.check_acl: sorted, bounded); () when the row has none."""
    if row.get("acl") is None:
        return ()
    try:
        return check_acl(row["acl"])
    except AclError as exc:
        raise SourceError(f"{where}: field {exc}") from None


def _given(row: dict[str, object], where: str) -> GivenVectors | None:
    embedding, embeddings = row.get("embedding"), row.get("embeddings")
    if embedding is not None and embeddings is not None:
        raise SourceError(f"{where}: give 'embedding' (one chunk) or 'embeddings' (one per chunk), not both")
    if embedding is not None:
        if not isinstance(embedding, list):
            raise SourceError(f"{where}: field 'embedding' must be a list of numbers")
        return GivenVectors([embedding], "embedding")
    if embeddings is not None:
        if not isinstance(embeddings, list) or not all(isinstance(v, list) for v in embeddings):
            raise SourceError(f"{where}: field 'embeddings' must be a list of lists of numbers")
        return GivenVectors(embeddings, "embeddings")
    return None


def _title_of(path: Path, text: str) -> str:
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        if stripped:
            break
    return path.stem.replace("_", " ").replace("-", " ")


def read_text_folder(root: Path) -> Iterator[Document]:
    """One document per text/markdown file; the id is the path relative to ``root``."""
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES):
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            rel = path.relative_to(root).as_posix()
            yield Document(rel, text, _title_of(path, text), {"source_path": rel})


def read_documents(path: Path) -> Iterator[Document]:
    """Documents from a BEIR folder (``corpus.jsonl`` inside), a ``.jsonl`` file or a folder of text files."""
    if path.is_file():
        if path.suffix == ".jsonl":
            return read_beir_jsonl(path)
        raise SourceError(
            f"{path}: a file to ingest must be BEIR JSONL (.jsonl); got {path.suffix or 'no suffix'}"
        )
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        return read_beir_jsonl(corpus) if corpus.is_file() else read_text_folder(path)
    raise SourceError(f"{path}: no such file or folder")


def read_queries(path: Path) -> dict[str, str]:
    queries: dict[str, str] = {}
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                row = json.loads(line)
                queries[str(row["_id"])] = row["text"]
    return queries


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV (``query-id  corpus-id  score`` with a header line)."""
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, start=1):
            parts = line.rstrip("\n").split("\t")
            if line_no == 1 and not parts[-1].lstrip("-").isdigit():
                continue
            if len(parts) != 3:
                raise SourceError(f"{path}:{line_no}: expected 3 tab-separated columns, got {len(parts)}")
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    return qrels
