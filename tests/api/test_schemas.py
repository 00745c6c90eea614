"""The response models read the service's typed values: a QueryAnswer becomes the /query JSON attribute by
attribute (``from_attributes``), in the shape the API has always had."""

from __future__ import annotations

from typing import get_args

from api.schemas import DegradationOut, QueryResponse
from rag.types import CacheLevel, DegradationCode


def test_the_response_cache_values_are_the_cache_levels() -> None:
    assert set(get_args(QueryResponse.model_fields["cache"].annotation)) == {c.value for c in CacheLevel}


def test_the_degradation_codes_documented_are_the_vocabulary() -> None:
    described = DegradationOut.model_fields["code"].description or ""
    assert described.split(", ") == [c.value for c in DegradationCode]
