"""A collection's tuned retrieval settings, kept in the manifest of the version that serves them.

``rag tune`` (:mod:`rag.offline.tuning`) chooses BM25's k1, b and IDF variant and the fusion of the BM25
and dense lists for one collection, and publishes them as a new index version whose manifest holds this
record under ``"tuning"``. Publishing (rather than writing a side file) is what makes a tuning safe to
roll out: every replica follows the new version, answers cached under the old version are not served for
the new one (cache keys name the version), and an ingest carries the record forward to the versions it
publishes after it. ``rag tune --reset`` publishes a version without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rag.bm25.index import BM25Params
from rag.fusion import FusionChoice
from rag.index.calibration import MANIFEST_FIELD as CALIBRATION_FIELD
from rag.index.calibration import ScoreCalibration

MANIFEST_KEY = "tuning"


@dataclass(frozen=True, slots=True)
class CollectionTuning:
    bm25: BM25Params
    fusion: FusionChoice
    source: str  # what the choice was made on: "labelled: <data> <split> (N queries)" or "pseudo-queries…"
    tuned_on: str  # the index version the queries were run against
    evidence: Mapping[str, Any] = field(default_factory=dict)  # the scores that decided (for people)
    # the confidence scale fitted on the same queries (rag.index.calibration); None: not fitted
    calibration: ScoreCalibration | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "bm25": {"k1": self.bm25.k1, "b": self.bm25.b, "idf": self.bm25.idf},
            "fusion": self.fusion.to_json(),
            "source": self.source,
            "tuned_on": self.tuned_on,
            "evidence": dict(self.evidence),
        }
        if self.calibration is not None:
            out[CALIBRATION_FIELD] = self.calibration.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CollectionTuning:
        bm25 = data["bm25"]
        idf = str(bm25.get("idf", "lucene"))
        if idf not in ("lucene", "okapi"):
            raise ValueError(f"tuning: unknown BM25 idf variant {idf!r}")
        return cls(
            BM25Params(k1=float(bm25["k1"]), b=float(bm25["b"]), idf="okapi" if idf == "okapi" else "lucene"),
            FusionChoice.from_json(data["fusion"]),
            str(data.get("source", "")),
            str(data.get("tuned_on", "")),
            dict(data.get("evidence", {})),
            ScoreCalibration.from_json(data[CALIBRATION_FIELD]) if data.get(CALIBRATION_FIELD) else None,
        )


def read_tuning(manifest: Mapping[str, Any]) -> CollectionTuning | None:
    """The tuning a version's manifest carries, or None (an untuned collection: the configured defaults)."""
    data = manifest.get(MANIFEST_KEY)
    return CollectionTuning.from_json(data) if data else None
