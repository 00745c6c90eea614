"""Vector spaces of a collection: which embedder a version's vectors come from, and what follows from it.

A collection is built with one embedder (its first *space*, recorded in ``collection.json``) and may be
re-embedded with another (:meth:`rag.index.ingest.Ingestor.reembed`). Each version's manifest says which
space it is in; everything that depends on the model follows the version, not the settings:

- ``embedder``: the model that embeds its chunks and its queries (:func:`rag.runtime.served_embedder_name`);
- ``point_space``: the salt of its point ids (:func:`rag.index.versions.point_id`): ``""`` for the first
  space, the embedder's name for any other, so two spaces never share a point id and a vector store can
  hold both while replicas switch;
- ``rotation_file``: its Matryoshka rotation (fitted on that model's vectors), under the collection's
  versions folder: ``rotation.npy`` for the first space, ``rotation-<hash>.npy`` for the others.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

POINT_SPACE_KEY = "point_space"
ROTATION_FILE_KEY = "rotation_file"
FIRST_ROTATION_FILE = "rotation.npy"


def space_of(embedder: str, first_embedder: str) -> str:
    """The point-id salt of vectors from ``embedder`` in a collection first built with ``first_embedder``."""
    return "" if embedder == first_embedder else embedder


def rotation_file_of(space: str) -> str:
    """The file name of the rotation of ``space``."""
    if not space:
        return FIRST_ROTATION_FILE
    return f"rotation-{hashlib.sha1(space.encode('utf-8')).hexdigest()[:12]}.npy"


def point_space(manifest: Mapping[str, Any] | None) -> str:
    """A version's point-id salt (``""``: the first space, and every version written before spaces)."""
    return str((manifest or {}).get(POINT_SPACE_KEY) or "")


def rotation_file(manifest: Mapping[str, Any] | None) -> str:
    """A version's rotation file name."""
    return str((manifest or {}).get(ROTATION_FILE_KEY) or FIRST_ROTATION_FILE)


def space_fields(space: str) -> dict[str, str]:
    """What a manifest records of its space."""
    return {POINT_SPACE_KEY: space, ROTATION_FILE_KEY: rotation_file_of(space)}
