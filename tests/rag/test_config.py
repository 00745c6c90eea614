from pathlib import Path

import pytest
from pydantic import ValidationError

from rag.config import load_settings
from rag.retrieval.plan import PipelineName, QueryPlan


def test_defaults_and_derived_paths(settings) -> None:
    assert settings.rrf_k == 60 and settings.matryoshka_rotation == "pca"
    assert settings.resolved_qdrant_path == settings.data_dir / "qdrant" / "test"


def test_environment_and_settings_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "rag.toml"
    file.write_text('RAG_RRF_K = 10\nrerank_depth = 7\ncollection = "from-file"\n')
    monkeypatch.setenv("RAG_SETTINGS_FILE", str(file))
    monkeypatch.setenv("RAG_COLLECTION", "from-env")
    s = load_settings()
    assert (s.rrf_k, s.rerank_depth, s.collection) == (10, 7, "from-env")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dense_dims": 100}, r"dense_dims must be one of \[64, 128, 256\]"),
        ({"chunk_words": 50, "chunk_overlap_words": 50}, r"chunk_overlap_words \(50\) must be smaller"),
        ({"collection": "bad name!"}, "collection"),
        ({"rrf_k": 0}, "rrf_k"),
    ],
)
def test_bad_settings_say_what_is_allowed(overrides: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        load_settings(**overrides)


def test_missing_settings_file_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_SETTINGS_FILE", "/nonexistent/rag.toml")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_settings()


def test_plan_validation() -> None:
    with pytest.raises(ValueError, match="retrievers must be a non-empty subset"):
        QueryPlan(retrievers=("sparse",))
    with pytest.raises(ValueError, match=r"candidates \(5\) must be at least top_k \(10\)"):
        QueryPlan(retrievers=("bm25",), candidates=5)
    with pytest.raises(ValueError, match="pipeline must be one of"):
        PipelineName.from_str("fast")


def test_local_qdrant_folder_in_use_gives_a_clear_error(settings) -> None:
    from rag.runtime import connect

    first = connect(settings)
    try:
        with pytest.raises(RuntimeError, match=r"in use by another process.*RAG_QDRANT_URL"):
            connect(settings)
    finally:
        first.close()


SECRETS = {
    "api_keys": "acme:acme-secret-key-0123456789",
    "admin_token": "admin-secret-token-0123456789",
    "llm_api_key": "sk-llm-secret-0123456789",
    "qdrant_api_key": "qdrant-secret-0123456789",
    "key_pepper": "pepper-secret-0123456789-0123456789",
    "metrics_token": "metrics-secret-0123456789",
    "cache_secret": "cache-secret-0123456789",
    "redis_url": "rediss://:redis-password-0123456789@redis.internal:6379/0",  # AUTH in the URL
}


def test_settings_never_show_a_secret_in_repr_json_or_errors() -> None:
    settings = load_settings(**SECRETS)
    shown = [repr(settings), str(settings), settings.model_dump_json()]
    with pytest.raises(ValidationError) as bad:  # an unrelated error must not print the input either
        load_settings(chunk_words=20, chunk_overlap_words=30, **SECRETS)  # secrets last: in the repr's tail
    shown.append(str(bad.value))
    for secret in SECRETS.values():
        assert all(secret[-10:] not in text for text in shown), secret  # not even a truncated tail
    assert settings.admin_token is not None
    assert settings.admin_token.get_secret_value() == SECRETS["admin_token"]  # revealed only on purpose


def test_an_empty_redis_url_means_no_redis() -> None:
    assert load_settings(redis_url="").redis_url is None
