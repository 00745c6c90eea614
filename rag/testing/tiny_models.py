"""A tiny BERT cross-encoder built from scratch in a folder, so reranker tests need no download."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_cross_encoder(folder: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT sequence classifier (1 label) with a word-level vocabulary
    taken from ``texts``; ``CrossEncoder(str(folder))`` loads it."""
    import torch
    import transformers
    from transformers import BertConfig, BertForSequenceClassification

    BertTokenizerFast = transformers.BertTokenizerFast  # type: ignore[attr-defined]

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
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
