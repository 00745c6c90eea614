"""A new embedder staged beside the collection it would replace, judged on live traffic, then promoted.

``rag reembed --model M --stage`` re-embeds the collection's current rows with ``M`` into a *candidate*
collection, ``<collection>__candidate``: its own versions and vector shards, so the serving collection and
its searches are untouched. A serving process that finds a candidate opens it beside the collection it
serves (:meth:`rag.service.lifecycle.Lifecycle.follow_candidate`), then

- shadows a sample of requests on it (rollout config ``[shadow] candidate = "candidate_index"``): the
  two rankings, latencies and costs compared (``rag_shadow_*`` metrics, a log line), and the judgments
  ``/feedback`` receives for those requests scored on both rankings (``rag_shadow_judged_*``);
- serves the requests the flag ``candidate_index`` assigns to it (A/B by tenant or session, with the
  flag's rollout percent, watched by auto-fallback like any candidate path).

``rag reembed --promote`` then publishes the collection's *current* rows (ingests since the staging
included) in the candidate's space as a new version — reusing the candidate's vectors, embedding only what
changed since — and removes the candidate: every replica follows the new version as it follows any
publish, and its queries are embedded by the new model from then on (:mod:`rag.index.spaces`).
``--discard`` removes a candidate without promoting it; ``rag reembed --model M`` alone re-embeds in place.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
from pathlib import Path

from rag.config import Settings
from rag.index.ingest import Ingestor, ReembedReport
from rag.index.versions import VersionStore
from rag.runtime import build_embedder, connect, ingest_params, open_store, settings_for_embedder

log = logging.getLogger(__name__)

CANDIDATE_SUFFIX = "__candidate"
CANDIDATE_FLAG = (
    "candidate_index"  # the rollout flag (and shadow candidate) that means "the staged candidate"
)


def candidate_settings(settings: Settings) -> Settings:
    """The settings of ``settings``' candidate collection: its own versions folder and vector store."""
    update: dict[str, object] = {"collection": settings.collection + CANDIDATE_SUFFIX}
    if (
        settings.qdrant_path is not None
    ):  # an explicit folder is the collection's own: the candidate's is beside it
        update["qdrant_path"] = settings.qdrant_path.with_name(settings.qdrant_path.name + CANDIDATE_SUFFIX)
    return settings.model_copy(update=update)


def staged_version(settings: Settings) -> str | None:
    """The candidate's current version, or None when no candidate is staged."""
    return VersionStore(candidate_settings(settings).versions_dir).current()


def _reembed(
    settings: Settings, model: str, source: VersionStore, reuse: VersionStore | None, progress: bool
) -> ReembedReport:
    embedder = build_embedder(settings_for_embedder(settings, model))
    store = open_store(settings)
    try:
        return Ingestor(ingest_params(settings), embedder, store, progress=progress).reembed(
            source, reuse=reuse
        )
    finally:
        store.close()


def reembed_in_place(settings: Settings, model: str, *, progress: bool = True) -> ReembedReport:
    """Publish the collection again with every chunk embedded by ``model`` (no staging, no judging)."""
    return _reembed(settings, model, VersionStore(settings.versions_dir), None, progress)


def stage(settings: Settings, model: str, *, progress: bool = True) -> ReembedReport:
    """Stage ``model`` as the candidate: the collection's current rows re-embedded into the candidate
    collection. Staging again (after ingests, say) embeds only the chunks the candidate lacks; staging
    another model replaces the candidate."""
    cand = candidate_settings(settings)
    current = VersionStore(cand.versions_dir)
    staged = current.current()
    if staged is not None:
        manifest_model = _manifest_embedder(current, staged)
        if manifest_model != model:
            log.info("replacing the staged candidate (%s) with %s", manifest_model, model)
            discard(settings)
    return _reembed(cand, model, VersionStore(settings.versions_dir), None, progress)


def promote(settings: Settings, *, progress: bool = True) -> ReembedReport:
    """Publish the collection in the staged candidate's space (its vectors reused), then remove the
    candidate. Raises ``ValueError`` when none is staged."""
    cand = VersionStore(candidate_settings(settings).versions_dir)
    staged = cand.current()
    if staged is None:
        raise ValueError(
            f"collection {settings.collection!r} has no staged candidate: rag reembed --stage first"
        )
    model = _manifest_embedder(cand, staged)
    report = _reembed(settings, model, VersionStore(settings.versions_dir), cand, progress)
    discard(settings)
    return report


def discard(settings: Settings) -> list[str]:
    """Remove the staged candidate: its versions first (serving processes close it at their next poll),
    then its vector store — the shard folders no process holds (a held one is left to the next discard).
    Returns what was removed."""
    cand = candidate_settings(settings)
    removed: list[str] = []
    versions = VersionStore(cand.versions_dir)
    if versions.root.exists():
        versions.current_file.unlink(missing_ok=True)
        shutil.rmtree(versions.root, ignore_errors=True)
        removed.append(str(versions.root))
    if cand.qdrant_url:
        client = connect(cand)
        try:
            if client.collection_exists(cand.collection):
                client.delete_collection(cand.collection)
                removed.append(f"{cand.qdrant_url} collection {cand.collection}")
        finally:
            client.close()
        return removed
    base = cand.resolved_qdrant_path if cand.vector_engine == "local" else cand.resolved_edge_path
    for folder in [base, *base.parent.glob(f"{base.name}.replica-*")]:
        if folder.is_dir() and _remove_unheld(folder):
            removed.append(str(folder))
    return removed


def _remove_unheld(folder: Path) -> bool:
    """Remove a shard folder unless a process holds its slot lock (``<folder>.lock``)."""
    lock_path = folder.with_name(folder.name + ".lock")
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("candidate shard %s is held by a serving process: left for the next discard", folder)
            return False
        shutil.rmtree(folder, ignore_errors=True)
    lock_path.unlink(missing_ok=True)
    return True


def _manifest_embedder(versions: VersionStore, name: str) -> str:
    manifest = json.loads((versions.path(name) / "manifest.json").read_text())
    return str(manifest["embedder"])
