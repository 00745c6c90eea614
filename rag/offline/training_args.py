"""The Hugging Face trainer arguments both of our trainers share (`rag train-embedder`,
`rag train-reranker`): CPU only, no checkpoints, no reporting, one seed."""

from __future__ import annotations

from typing import Any


def cpu_training_args(
    output_dir: str,
    *,
    epochs: float,
    batch_size: int,
    learning_rate: float,
    warmup_ratio: float,
    seed: int,
    logging_steps: int,
) -> dict[str, Any]:
    """Keyword arguments for a sentence-transformers ``*TrainingArguments`` (bi- or cross-encoder)."""
    return {
        "output_dir": output_dir,
        "num_train_epochs": epochs,
        "per_device_train_batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_ratio": warmup_ratio,
        "save_strategy": "no",  # the trainer saves the final model itself
        "logging_steps": logging_steps,
        "report_to": [],
        "seed": seed,
        "use_cpu": True,
        "dataloader_num_workers": 0,
    }
