"""Version folders: published versions form a chain (CURRENT → manifest ``parent`` → …); pruning walks that
chain, never the folder names, and a folder the chain does not reach (a crash between the rename and
``CURRENT``) is removed when the next ingest takes the lock."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.index import versions as versions_module
from rag.index.snapshot import IndexSnapshot
from rag.index.versions import VersionStore
from rag.types import Document
from tests.conftest import ANIMALS, make_ingestor


class _Crash(Exception):
    """Stands in for the process dying."""


def _crash_before_current(monkeypatch: pytest.MonkeyPatch) -> None:
    """The next publish renames its folder into place and dies before ``CURRENT`` is written."""
    real = versions_module.write_json_atomic

    def write(path: Path, data: object) -> None:
        if path.name == "CURRENT":
            raise _Crash("killed between the folder rename and CURRENT")
        real(path, data)

    monkeypatch.setattr(versions_module, "write_json_atomic", write)


def _point_ids(store: VersionStore, name: str) -> set[str]:
    snapshot = IndexSnapshot.load(store, name)
    assert snapshot is not None
    return {c.point_id for c in snapshot.chunks}


def test_prune_follows_the_published_chain_after_a_crash_between_rename_and_current(
    settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor, qdrant = make_ingestor(settings)
    versions = VersionStore(settings.versions_dir)
    ingestor.ingest(ANIMALS)
    serving = versions.current()
    assert serving == "v000001"
    serving_points = _point_ids(versions, serving)

    with monkeypatch.context() as patch:
        _crash_before_current(patch)
        with pytest.raises(_Crash):
            ingestor.ingest([Document("ant", "Ants build colonies underground.", "Ant")])
    # the crashed version's folder is in place, sorts after the serving one, and was never published
    assert versions.current() == serving
    orphans = [p.name for p in versions.root.iterdir() if p.name.startswith("v") and p.name != serving]
    assert orphans == ["v000002"]

    first = ingestor.ingest([Document("eel", "Eels are long fish that live in rivers.", "Eel")])
    assert first.previous_version == serving
    # the serving version is still one of the last two published: its folder and its points stay
    assert versions.path(serving).is_dir()
    assert qdrant.existing(sorted(serving_points)) == serving_points
    assert versions.published() == [serving, first.version]
    # the crashed folder is gone (removed when the ingest took the lock), whatever its name
    on_disk = sorted(p.name for p in versions.root.iterdir() if p.name.startswith("v"))
    assert on_disk == [serving, first.version]
    assert json.loads((versions.path(first.version) / "manifest.json").read_text())["parent"] == serving

    second = ingestor.ingest([Document("yak", "Yaks are long-haired cattle of the mountains.", "Yak")])
    # now the once-serving version is no longer among the last two published: it goes, with its own points
    assert versions.published() == [first.version, second.version]
    assert not versions.path(serving).exists()
    live = _point_ids(versions, first.version) | _point_ids(versions, second.version)
    assert qdrant.all_ids() == live
    qdrant.close()


def _fake_version(store: VersionStore, name: str, parent: str | None) -> None:
    folder = store.path(name)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"version": name, "parent": parent}))


def test_published_is_the_chain_from_current_and_prune_walks_it(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    _fake_version(store, "v000003", None)  # the chain ends where a manifest has no parent
    _fake_version(store, "v000004", "v000003")
    _fake_version(store, "v000005", "v000004")  # crashed under older code, which then published v000006
    _fake_version(store, "v000006", "v000004")
    _fake_version(store, "v000007", "v000006")  # crashed: folder in place, CURRENT never switched
    (tmp_path / "CURRENT").write_text(json.dumps({"version": "v000006"}))
    assert store.published() == ["v000003", "v000004", "v000006"]
    assert store.unpublished() == ["v000007"]
    assert store.discard_unpublished() == ["v000007"]
    assert store.next_name() == "v000007"
    assert store.prune(keep=2) == ["v000003"]  # v000005 sorts after v000004, the oldest kept: it stays
    assert store.published() == ["v000004", "v000006"]
    assert store.prune(keep=1) == ["v000004", "v000005"]
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == ["v000006"]


def test_prune_refuses_to_keep_fewer_than_one_version(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep must be at least 1, got 0"):
        VersionStore(tmp_path).prune(keep=0)


def test_nothing_is_published_without_current(tmp_path: Path) -> None:
    store = VersionStore(tmp_path)
    _fake_version(store, "v000001", None)  # the first ingest died after its rename
    assert store.published() == [] and store.unpublished() == ["v000001"]
