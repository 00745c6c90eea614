"""The sentence embedder on onnxruntime: the model folder's fast tokenizer, the exported transformer
(:mod:`rag.dense.onnx_export`, fp32 or dynamic int8), then the pooling the folder's sentence-transformers
config names and L2 normalisation, the same steps as :class:`~rag.dense.embedder.SentenceTransformerEmbedder`
without torch at query time.

Serves the bundled all-MiniLM-L6-v2 (checked against its pinned digests first) or a local model folder
laid out as Transformer → Pooling → Normalize; any other model name is refused with the torch backend as
the way out.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from rag.dense.embedder import BUNDLED_MINILM_ALIASES, resolve_model_path
from rag.dense.onnx_export import OUTPUT, ExportCache, weights_key
from rag.dense.weights import BUNDLED_SHA256

_TRANSFORMER = "sentence_transformers.models.Transformer"
_POOLING = "sentence_transformers.models.Pooling"
_NORMALIZE = "sentence_transformers.models.Normalize"
_NO_LIMIT = 10**6  # tokenizer_config's model_max_length is a huge sentinel when the model sets none


class Pooling(Enum):
    MEAN = "mean"
    CLS = "cls"
    MAX = "max"

    @property
    def config_key(self) -> str:
        """Its flag in a sentence-transformers ``Pooling`` config."""
        return "pooling_mode_cls_token" if self is Pooling.CLS else f"pooling_mode_{self.value}_tokens"

    @classmethod
    def from_config(cls, config: dict[str, Any], where: Path) -> Pooling:
        modes = sorted(k for k, v in config.items() if k.startswith("pooling_mode_") and v)
        chosen = [p for p in cls if p.config_key in modes]
        if len(modes) != 1 or len(chosen) != 1:
            raise ValueError(
                f"the onnx embedder pools with exactly one of mean, cls or max tokens; {where} asks for "
                f"{modes or 'none'} (use RAG_EMBEDDER_BACKEND=torch)"
            )
        return chosen[0]

    def apply(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """(batch, sequence, dim) token states → (batch, dim), padding left out as sentence-transformers
        does."""
        if self is Pooling.CLS:
            return np.asarray(hidden[:, 0], dtype=np.float32)
        weights = mask[:, :, None].astype(hidden.dtype)
        if self is Pooling.MAX:
            pooled = np.where(weights > 0, hidden, np.float32(-1e9)).max(axis=1)
        else:
            pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        return np.asarray(pooled, dtype=np.float32)


@dataclass(frozen=True, slots=True)
class SentenceLayout:
    """What the folder's sentence-transformers files say about tokenisation and pooling."""

    pooling: Pooling
    max_seq_length: int  # the model's own cap
    lowercase: bool  # sentence_bert_config's do_lower_case (lowercases the text before the tokenizer)
    dim: int

    @classmethod
    def read(cls, folder: Path) -> SentenceLayout:
        config = _json(folder / "config.json") or {}
        pooling = Pooling.MEAN  # without modules.json sentence-transformers mean-pools
        dim = config.get("hidden_size")
        modules = _json(folder / "modules.json")
        if modules is not None:
            types = [m.get("type") for m in modules]
            if types[:1] != [_TRANSFORMER] or any(t not in {_POOLING, _NORMALIZE} for t in types[1:]):
                raise ValueError(
                    f"the onnx embedder runs Transformer → Pooling → Normalize models; {folder} has {types} "
                    "(use RAG_EMBEDDER_BACKEND=torch)"
                )
            if modules[0].get("path", "") not in {"", "."}:
                raise ValueError(f"the onnx embedder needs the transformer at the folder's root: {folder}")
            for module in modules:
                if module.get("type") == _POOLING:
                    pooling_config = _json(folder / module.get("path", "") / "config.json") or {}
                    pooling = Pooling.from_config(pooling_config, folder / module.get("path", ""))
                    dim = pooling_config.get("word_embedding_dimension", dim)
        st_config = _json(folder / "sentence_bert_config.json") or {}
        cap = st_config.get("max_seq_length")
        if cap is None:
            tok_cap = (_json(folder / "tokenizer_config.json") or {}).get("model_max_length")
            cap = tok_cap if isinstance(tok_cap, int) and tok_cap < _NO_LIMIT else None
        cap = cap or config.get("max_position_embeddings") or 512
        if not isinstance(dim, int):
            raise ValueError(
                f"cannot tell the embedding dimension of {folder} (no hidden_size in config.json)"
            )
        return cls(pooling, int(cap), bool(st_config.get("do_lower_case", False)), dim)


def _json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def _fast_tokenizer(folder: Path) -> Any:
    """The folder's ``tokenizer.json`` through the ``tokenizers`` library (what transformers' fast tokenizer
    wraps), else transformers' fast tokenizer converted from the slow one."""
    if (folder / "tokenizer.json").is_file():
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(folder / "tokenizer.json"))
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), use_fast=True).backend_tokenizer


def is_exportable(model: str) -> bool:
    """Whether the onnx backend accepts ``model``: a bundled alias or a local folder."""
    return model in BUNDLED_MINILM_ALIASES or Path(model).is_dir()


def onnx_serves(model: str) -> bool:
    """Whether the onnx backend runs ``model`` (``RAG_EMBEDDER_BACKEND=auto`` picks it then): the bundled
    model, or a local folder laid out as Transformer → Pooling → Normalize with a pooling it implements.
    Reads the folder's small config files only."""
    if model in BUNDLED_MINILM_ALIASES:
        return True
    folder = Path(model)
    if not folder.is_dir():
        return False  # a hub name: sentence-transformers (torch) resolves it
    try:
        SentenceLayout.read(folder)
    except (ValueError, OSError, json.JSONDecodeError):
        return False
    return True


class OnnxEmbedder:
    """Same contract as :class:`~rag.dense.embedder.SentenceTransformerEmbedder`, on onnxruntime.
    ``cache_dir`` holds the exported files; ``threads`` is onnxruntime's intra-op thread count (0: its
    default, one per core)."""

    def __init__(
        self,
        model: str,
        *,
        cache_dir: Path,
        max_seq_length: int = 256,
        quantize: bool = False,
        threads: int = 0,
    ) -> None:
        if max_seq_length < 1:
            raise ValueError(f"max_seq_length must be greater than 0, got {max_seq_length}")
        if threads < 0:
            raise ValueError(f"threads must be 0 (onnxruntime's default) or more, got {threads}")
        if not is_exportable(model):
            raise ValueError(
                f"the onnx embedder backend needs the bundled model "
                f"({', '.join(sorted(BUNDLED_MINILM_ALIASES))}) or a local model folder, got {model!r}; "
                "use RAG_EMBEDDER_BACKEND=torch for other models"
            )
        self._model_name = model
        self._cache = ExportCache(cache_dir)
        self._max_seq_length = max_seq_length
        self._quantize = quantize
        self._threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: list[str] = []
        self._layout: SentenceLayout | None = None
        self._loading = threading.Lock()

    @property
    def name(self) -> str:
        """fp32: the model's own name. It is the same function as torch's (the same weights and steps; every
        tested text's vector at cosine >= 0.9999 to torch's), so a collection built by either backend is
        served and grown by the other, and their cached answers are shared. int8 is another function (a
        text's vector can move to cosine 0.984): its own name, its own collection."""
        return f"{self._model_name}#onnx-int8" if self._quantize else self._model_name

    @property
    def cache(self) -> ExportCache:
        return self._cache

    def warm_up(self) -> None:
        if self._session is not None:
            return
        with self._loading:  # concurrent first queries load (and export) once
            if self._session is None:
                self._load()

    def _load(self) -> None:
        folder = Path(resolve_model_path(self._model_name))  # the bundled files are checked here
        if not folder.is_dir():
            raise ValueError(
                f"the onnx embedder backend needs a local model folder, got {self._model_name!r}"
            )
        layout = SentenceLayout.read(folder)
        pinned = BUNDLED_SHA256 if self._model_name in BUNDLED_MINILM_ALIASES else None
        path = self._cache.model_file(folder, weights_key(folder, pinned), quantize=self._quantize)

        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self._threads
        options.inter_op_num_threads = 1
        # idle pool threads sleep instead of spinning: CPU time goes to the forward pass, not to waiting
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        tokenizer = _fast_tokenizer(folder)
        tokenizer.no_padding()  # tokenizer.json may carry fixed padding; batches are padded below
        tokenizer.enable_truncation(max_length=min(self._max_seq_length, layout.max_seq_length))
        self._inputs = [i.name for i in session.get_inputs()]
        self._tokenizer, self._layout, self._session = tokenizer, layout, session

    @property
    def dim(self) -> int:
        self.warm_up()
        assert self._layout is not None
        return self._layout.dim

    @property
    def intra_op_threads(self) -> int:
        """The threads a forward pass of the loaded session keeps busy: as configured, or onnxruntime's
        default of one per core."""
        self.warm_up()
        return int(self._session.get_session_options().intra_op_num_threads) or (os.cpu_count() or 1)

    def embed(self, texts: Sequence[str], *, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        self.warm_up()
        assert self._layout is not None
        layout = self._layout
        if not texts:
            return np.empty((0, layout.dim), dtype=np.float32)
        if batch_size < 1:
            raise ValueError(f"batch_size must be greater than 0, got {batch_size}")
        inputs = [t.lower() for t in texts] if layout.lowercase else list(texts)
        encodings = self._tokenizer.encode_batch(inputs)
        # batch texts of similar length together (less padding), then restore the caller's order
        order = np.argsort([-len(e.ids) for e in encodings], kind="stable")
        out = np.empty((len(texts), layout.dim), dtype=np.float32)
        starts = range(0, len(texts), batch_size)
        if progress:
            from tqdm import tqdm

            starts = tqdm(starts, desc="embed", unit="batch")
        for start in starts:
            rows = order[start : start + batch_size]
            out[rows] = self._forward([encodings[i] for i in rows])
        return out

    def _forward(self, encodings: list[Any]) -> np.ndarray:
        assert self._layout is not None
        width = max(len(e.ids) for e in encodings)
        arrays = {name: np.zeros((len(encodings), width), dtype=np.int64) for name in self._inputs}
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            arrays["input_ids"][row, :n] = enc.ids
            arrays["attention_mask"][row, :n] = 1
            if "token_type_ids" in arrays:
                arrays["token_type_ids"][row, :n] = enc.type_ids
        hidden = self._session.run([OUTPUT], arrays)[0]
        pooled = self._layout.pooling.apply(hidden, arrays["attention_mask"])
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)  # torch's F.normalize eps
        return np.asarray(pooled / norms, dtype=np.float32)
