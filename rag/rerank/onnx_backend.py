"""Cross-encoder inference with onnxruntime (fp32 or dynamically quantised int8).

The model folder is exported once to ``<folder>/onnx/model.onnx`` (and ``model_int8.onnx``), then reused.
Tokenisation is the model's own Hugging Face tokenizer with the same pair truncation as ``CrossEncoder``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rag.rerank.cross_encoder import Pair, PairScorer, RerankerDefaults


def export_onnx(model_dir: Path, *, quantize: bool) -> Path:
    """The ONNX file for ``model_dir`` (exported and, if asked, quantised on first use)."""
    out_dir = model_dir / "onnx"
    fp32 = out_dir / "model.onnx"
    int8 = out_dir / "model_int8.onnx"
    if not fp32.exists():
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        out_dir.mkdir(exist_ok=True)
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        sample = tokenizer(["a query"], ["a passage of text"], return_tensors="pt")
        names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in sample]
        axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
        tmp = fp32.with_suffix(".tmp.onnx")
        torch.onnx.export(
            model,
            tuple(sample[n] for n in names),
            str(tmp),
            input_names=names,
            output_names=["logits"],
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
        tmp.replace(fp32)
    if quantize and not int8.exists():
        from onnxruntime.quantization import QuantType, quantize_dynamic

        tmp = int8.with_suffix(".tmp.onnx")
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8)
        tmp.replace(int8)
    return int8 if quantize else fp32


class OnnxCrossEncoderReranker(PairScorer):
    """Same contract as :class:`~rag.rerank.cross_encoder.CrossEncoderReranker`, on onnxruntime."""

    def __init__(
        self,
        model: str,
        *,
        max_length: int | None = None,
        batch_size: int = 32,
        quantize: bool = False,
        threads: int = 0,
    ) -> None:
        if not Path(model).is_dir():
            raise ValueError(f"the onnx reranker backend needs a local model folder, got {model!r}")
        defaults = RerankerDefaults.of(model)
        self._model_dir = Path(model)
        self._max_length = max_length or defaults.max_length
        self._batch_size = batch_size
        self._quantize = quantize
        self._threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._inputs: list[str] = []
        self.first_stage_weight = defaults.first_stage_weight

    @property
    def name(self) -> str:
        return f"{self._model_dir}#onnx{'-int8' if self._quantize else ''}"

    def warm_up(self) -> None:
        if self._session is not None:
            return
        import onnxruntime as ort
        from transformers import AutoTokenizer

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        path = export_onnx(self._model_dir, quantize=self._quantize)
        options = ort.SessionOptions()
        if self._threads:
            options.intra_op_num_threads = self._threads
        self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = [i.name for i in self._session.get_inputs()]
        self._tokenizer = AutoTokenizer.from_pretrained(str(self._model_dir))

    @property
    def intra_op_threads(self) -> int:
        """The threads a forward pass keeps busy: as configured, or onnxruntime's default of one per core."""
        self.warm_up()
        return int(self._session.get_session_options().intra_op_num_threads) or (os.cpu_count() or 1)

    def score_pairs(self, pairs: Sequence[Pair]) -> np.ndarray:
        if not pairs:
            return np.empty(0, dtype=np.float32)
        self.warm_up()
        # batch pairs of similar length together (less padding), then restore the caller's order
        order = np.argsort([-(len(q) + len(p)) for q, p in pairs], kind="stable")
        out = []
        for start in range(0, len(pairs), self._batch_size):
            batch = [pairs[i] for i in order[start : start + self._batch_size]]
            enc = self._tokenizer(
                [q for q, _ in batch],
                [p for _, p in batch],
                padding=True,
                truncation=True,
                max_length=self._max_length,
                return_tensors="np",
            )
            feed = {name: enc[name].astype(np.int64) for name in self._inputs}
            out.append(self._session.run(["logits"], feed)[0].reshape(-1))
        logits = np.empty(len(pairs), dtype=np.float64)
        logits[order] = np.concatenate(out)
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)  # CrossEncoder's default sigmoid
