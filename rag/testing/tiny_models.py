"""Tiny BERT models (a cross-encoder, a sentence encoder) built from scratch in a folder, so reranker and
embedder tests need no download."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _save_tiny_bert(folder: Path, texts: Iterable[str], *, seed: int, head: str) -> None:
    """Save a randomly initialised 2-layer BERT (``head``: a ``transformers`` model class name) and its
    word-level tokenizer, the vocabulary taken from ``texts``."""
    import torch
    import transformers
    from transformers import BertConfig

    BertTokenizerFast = transformers.BertTokenizerFast  # type: ignore[attr-defined]
    model_class = getattr(transformers, head)

    words = sorted({w for t in texts for w in re.findall(r"\w+", t.lower())})
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(SPECIAL + words) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    torch.manual_seed(seed)
    config = BertConfig(  # type: ignore[call-arg]
        vocab_size=len(SPECIAL) + len(words),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        num_labels=1,  # read by the sequence classifier only
    )
    model_class(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))


def build_tiny_cross_encoder(folder: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT sequence classifier (1 label) with a word-level vocabulary
    taken from ``texts``; ``CrossEncoder(str(folder))`` loads it."""
    _save_tiny_bert(folder, texts, seed=seed, head="BertForSequenceClassification")
    return folder


def build_tiny_sentence_encoder(
    folder: Path, texts: Iterable[str], *, seed: int = 0, max_seq_length: int = 16
) -> Path:
    """Save a randomly initialised 2-layer BERT as a sentence-transformers model (Transformer → mean
    Pooling → Normalize, ``max_seq_length`` tokens) with a word-level vocabulary taken from ``texts``;
    ``SentenceTransformer(str(folder))`` loads it."""
    import json

    _save_tiny_bert(folder, texts, seed=seed, head="BertModel")
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"},
    ]
    (folder / "modules.json").write_text(json.dumps(modules))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    pooling = {
        "word_embedding_dimension": 32,
        "pooling_mode_cls_token": False,
        "pooling_mode_mean_tokens": True,
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
    (folder / "2_Normalize").mkdir(exist_ok=True)
    st_config = {"max_seq_length": max_seq_length, "do_lower_case": False}
    (folder / "sentence_bert_config.json").write_text(json.dumps(st_config))
    return folder
