"""`rag train-embedder`: fine-tune the bi-encoder on a collection's judgments, Matryoshka-style.

The judgments are a BEIR split's qrels and/or a feedback export (BEIR qrels TSV with its queries). For every
judged-relevant (query, document) pair the project's own hybrid retriever mines hard negatives: its top
``mine_depth`` documents that are not judged for that query (documents judged not relevant come first).
The loss is sentence-transformers' MultipleNegativesRankingLoss (the positive against its hard negatives and
every other passage in the batch) wrapped in MatryoshkaLoss over ``matryoshka_dims``, so the 256/128/64-d
prefixes that the funnel searches with are trained, not only rotated.

A slice of the labelled queries is held out. After training, the data folder's corpus is ingested with the
new model into the collection ``rag eval`` uses for it (so evaluating the model afterwards re-embeds
nothing), and validation nDCG@10 of the dense and hybrid plans is measured there and on the base
collection. The model folder records its domain in ``rag_model.json``
(:class:`~rag.dense.model_record.EmbedderRecord`).
"""

from __future__ import annotations

import logging
import random
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.dense.embedder import resolve_model_path
from rag.dense.hashing import is_hash_spec
from rag.dense.model_record import EmbedderRecord, IndexRef, file_sha256
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import dataset_collection, open_dataset
from rag.offline.metrics import evaluate_run, ranked_run
from rag.offline.training_args import cpu_training_args
from rag.retrieval.plan import PipelineName, QueryPlan, plan_for
from rag.runtime import Runtime

log = logging.getLogger(__name__)

FEEDBACK_PREFIX = "feedback:"  # feedback query ids are kept apart from the data folder's
MATRYOSHKA_TRAIN_DIMS = (384, 256, 128, 64)  # full MiniLM width, then the funnel's prefixes


@dataclass(frozen=True, slots=True)
class EmbedderTrainConfig:
    negatives: int = 1
    mine_depth: int = 30
    epochs: float = 2.0
    batch_size: int = 32
    max_seq_length: int = 256
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    validation_queries: int = 80
    matryoshka_dims: tuple[int, ...] = MATRYOSHKA_TRAIN_DIMS
    base_model: str | None = None  # None: the configured embedder (RAG_EMBEDDER_MODEL)
    seed: int = 13

    def __post_init__(self) -> None:
        if self.negatives < 0:
            raise ValueError(f"negatives must be >= 0, got {self.negatives}")
        if self.mine_depth <= self.negatives:
            raise ValueError(f"mine_depth ({self.mine_depth}) must exceed negatives ({self.negatives})")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be greater than 0, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (in-batch negatives), got {self.batch_size}")
        if not 16 <= self.max_seq_length <= 512:
            raise ValueError(f"max_seq_length must be in [16, 512], got {self.max_seq_length}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.validation_queries < 0:
            raise ValueError(f"validation_queries must be >= 0, got {self.validation_queries}")
        dims = self.matryoshka_dims
        if not dims or any(d < 1 for d in dims) or list(dims) != sorted(set(dims), reverse=True):
            raise ValueError(f"matryoshka_dims must be distinct positive dims, largest first, got {dims}")


@dataclass(frozen=True, slots=True)
class Judgments:
    """Queries and graded judgments (qrels) from a split and/or feedback, with the held-out slice."""

    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    train: list[str]
    validation: list[str]
    sources: dict[str, int] = field(default_factory=dict)  # judged queries per source


def load_judgments(
    data: Path,
    split: str | None,
    feedback: Path | None,
    feedback_queries: Path | None,
    *,
    validation_queries: int,
    rng: random.Random,
) -> Judgments:
    """The split's qrels (``data/qrels/<split>.tsv``) and the feedback qrels, merged. Feedback queries come
    from ``feedback_queries``, else a ``queries.jsonl`` of the export folder (``<dir>/qrels/x.tsv`` →
    ``<dir>/queries.jsonl``), else the data folder's; their ids get :data:`FEEDBACK_PREFIX`. The validation
    slice (at most a fifth) is drawn from the split's queries, or from the feedback ones without a split."""
    queries: dict[str, str] = {}
    qrels: dict[str, dict[str, int]] = {}
    split_ids: list[str] = []
    feedback_ids: list[str] = []
    if split is not None:
        path = data / "qrels" / f"{split}.tsv"
        if not path.is_file():
            raise FileNotFoundError(f"{data} has no qrels for split {split!r} (looked for {path})")
        data_queries = read_queries(data / "queries.jsonl")
        for qid, judged in read_qrels(path).items():
            if qid in data_queries:
                queries[qid], qrels[qid] = data_queries[qid], judged
                split_ids.append(qid)
    if feedback is not None:
        if not feedback.is_file():
            raise FileNotFoundError(f"feedback qrels {feedback} not found")
        qfile = feedback_queries or _export_queries(feedback) or data / "queries.jsonl"
        fb_queries = read_queries(qfile)
        for qid, judged in read_qrels(feedback).items():
            if qid not in fb_queries:
                log.warning("feedback query %s has no text in %s: skipped", qid, qfile)
                continue
            key = FEEDBACK_PREFIX + qid
            queries[key], qrels[key] = fb_queries[qid], judged
            feedback_ids.append(key)
    if not qrels:
        raise ValueError("no judged queries: give --split with qrels in the data folder and/or --feedback")
    pool = sorted(split_ids) if split_ids else sorted(feedback_ids)
    rng.shuffle(pool)
    n_val = min(validation_queries, len(pool) // 5)
    validation = pool[:n_val]
    held = set(validation)
    train = [q for q in sorted(split_ids) + sorted(feedback_ids) if q not in held]
    sources = {"split": len(split_ids), "feedback": len(feedback_ids)}
    return Judgments(queries, qrels, train, validation, sources)


def _export_queries(qrels_file: Path) -> Path | None:
    """``<dir>/queries.jsonl`` for a qrels file in the BEIR layout ``<dir>/qrels/<name>.tsv``."""
    candidate = qrels_file.resolve().parent.parent / "queries.jsonl"
    return candidate if qrels_file.resolve().parent.name == "qrels" and candidate.is_file() else None


def negatives_for(ranked: Sequence[str], judged: Mapping[str, int], n: int, rng: random.Random) -> list[str]:
    """``n`` hard negatives for one query from its ranked doc ids: documents judged not relevant (score
    <= 0) first, in rank order, then a sample of the unjudged ones. Fewer than ``n`` unjudged documents are
    sampled with replacement; none at all (and no judged negative) gives an empty list."""
    explicit = [d for d in ranked if d in judged and judged[d] <= 0]
    explicit += [d for d, s in sorted(judged.items()) if s <= 0 and d not in explicit]
    chosen = explicit[:n]
    pool = [d for d in ranked if d not in judged]
    need = n - len(chosen)
    if need <= 0:
        return chosen
    if len(pool) >= need:
        return chosen + rng.sample(pool, need)
    if not pool:
        return chosen if chosen else []
    return chosen + [rng.choice(pool) for _ in range(need)]


def make_groups(
    qids: Sequence[str],
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, int]],
    ranked: Mapping[str, Sequence[str]],
    passages: Mapping[str, str],
    negatives: int,
    rng: random.Random,
) -> list[tuple[str, ...]]:
    """(query, positive, negative 1..n) per judged-relevant document that the index holds. A query whose
    ranking offers no negative is skipped when negatives are asked for. Pure: ``ranked`` is the mined
    hybrid order per query, ``passages`` the text of each document as it is embedded."""
    groups: list[tuple[str, ...]] = []
    for qid in qids:
        judged = qrels[qid]
        positives = [d for d, s in sorted(judged.items()) if s > 0 and d in passages]
        for doc_id in positives:
            chosen = [d for d in negatives_for(ranked.get(qid, ()), judged, negatives, rng) if d in passages]
            if len(chosen) < negatives:
                continue
            groups.append((queries[qid], passages[doc_id], *(passages[d] for d in chosen)))
    return groups


def mining_plan(runtime: Runtime, depth: int) -> QueryPlan:
    """The hybrid plan that mines hard negatives: its top ``depth`` documents."""
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=depth, reranker_available=False)
    return plan.with_(candidates=max(plan.candidates, depth))


def mine(
    runtime: Runtime, queries: Mapping[str, str], qids: Sequence[str], depth: int
) -> dict[str, list[str]]:
    """The hybrid top ``depth`` document ids of each query."""
    plan = mining_plan(runtime, depth)
    return {q: [h.doc_id for h in runtime.pipeline.search(queries[q], plan).hits[:depth]] for q in qids}


def validate(
    runtime: Runtime, queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]], qids: Sequence[str]
) -> dict[str, dict[str, float]]:
    """nDCG@10 / recall@100 / MRR@10 of the dense and hybrid plans on ``qids`` (their default plans)."""
    out: dict[str, dict[str, float]] = {}
    sub = {q: qrels[q] for q in qids}
    for name in (PipelineName.DENSE, PipelineName.HYBRID):
        plan = plan_for(name, runtime.settings, top_k=100, reranker_available=False)
        ranked = {q: [h.doc_id for h in runtime.pipeline.search(queries[q], plan).hits[:100]] for q in qids}
        out[name.value] = evaluate_run(sub, ranked_run(ranked))
    return out


def base_model_name(settings: Settings, config: EmbedderTrainConfig) -> str:
    base = config.base_model or settings.embedder_model
    if is_hash_spec(base):
        raise ValueError(
            f"cannot fine-tune the hash embedder {base!r}: set --base-model or RAG_EMBEDDER_MODEL"
        )
    return base


def train_embedder(
    settings: Settings,
    data: Path,
    output: Path,
    *,
    split: str | None = "train",
    feedback: Path | None = None,
    feedback_queries: Path | None = None,
    config: EmbedderTrainConfig | None = None,
    progress: bool = True,
) -> EmbedderRecord:
    import torch
    from datasets import Dataset
    from sentence_transformers import (
        SentenceTransformer,
        SentenceTransformerTrainer,
        SentenceTransformerTrainingArguments,
    )
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    config = config or EmbedderTrainConfig()
    base = base_model_name(settings, config)
    if not (data / "corpus.jsonl").is_file():
        raise FileNotFoundError(f"{data} is not a BEIR folder: missing corpus.jsonl")
    if output.resolve() == Path(resolve_model_path(base)).resolve():
        raise ValueError(f"--output {output} is the base model's folder")
    started = time.perf_counter()
    rng = random.Random(config.seed)
    judgments = load_judgments(
        data, split, feedback, feedback_queries, validation_queries=config.validation_queries, rng=rng
    )
    settings = settings.model_copy(update={"embedder_model": base})
    if settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(data, settings)})
    runtime = open_dataset(settings, data, load_reranker=False, progress=progress)
    try:
        mined_on = IndexRef(settings.collection, runtime.snapshot.version)
        ingest_s = time.perf_counter() - started
        passages = {d: c.passage for d, c in runtime.snapshot.first_chunks.items()}
        ranked = mine(runtime, judgments.queries, judgments.train, config.mine_depth)
        groups = make_groups(
            judgments.train, judgments.queries, judgments.qrels, ranked, passages, config.negatives, rng
        )
        if not groups:
            raise ValueError(
                "no training groups: no judged-relevant document of a train query is in the index"
            )
        before = validate(runtime, judgments.queries, judgments.qrels, judgments.validation)
    finally:
        runtime.close()
    mined_s = time.perf_counter() - started - ingest_s
    log.info("mined %d groups from %d queries in %.0f s", len(groups), len(judgments.train), mined_s)

    columns = ["anchor", "positive"] + [f"negative_{i}" for i in range(1, config.negatives + 1)]
    dataset = Dataset.from_dict({name: [g[i] for g in groups] for i, name in enumerate(columns)})
    torch.manual_seed(config.seed)
    model = SentenceTransformer(resolve_model_path(base), device="cpu")
    serve_max_seq_length = model.max_seq_length  # the base's: what the saved model embeds with
    model.max_seq_length = config.max_seq_length
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    full_dim = getter()
    dims = [d for d in config.matryoshka_dims if full_dim is None or d <= full_dim]
    loss = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), matryoshka_dims=dims)
    train_started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        args = SentenceTransformerTrainingArguments(
            **cpu_training_args(
                tmp,
                epochs=config.epochs,
                batch_size=config.batch_size,
                learning_rate=config.learning_rate,
                warmup_ratio=config.warmup_ratio,
                seed=config.seed,
                logging_steps=10,
            ),
            # a query with two positives never meets itself as an in-batch negative
            batch_sampler=BatchSamplers.NO_DUPLICATES,
            disable_tqdm=not progress,
        )
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
        result = trainer.train()
    train_s = time.perf_counter() - train_started
    # trained on shorter texts (cheaper), served at the base's length: a model saved with the training
    # length would embed the corpus truncated to it
    model.max_seq_length = serve_max_seq_length
    output.mkdir(parents=True, exist_ok=True)
    model.save(str(output))
    del model, trainer

    validated_on: IndexRef | None = None
    validation: dict[str, Any] = {"queries": len(judgments.validation)}
    validate_started = time.perf_counter()
    if judgments.validation:
        trained = settings.model_copy(
            update={"embedder_model": str(output.resolve()), "collection": "default"}
        )
        trained = trained.model_copy(update={"collection": dataset_collection(data, trained)})
        runtime = open_dataset(trained, data, load_reranker=False, progress=progress)
        try:
            validated_on = IndexRef(trained.collection, runtime.snapshot.version)
            after = validate(runtime, judgments.queries, judgments.qrels, judgments.validation)
        finally:
            runtime.close()
        validation.update(
            {
                "before": before,
                "after": after,
                "ndcg@10_gain": {
                    k: round(after[k]["ndcg@10"] - before[k]["ndcg@10"], 4) for k in ("dense", "hybrid")
                },
            }
        )
    validate_s = time.perf_counter() - validate_started
    record = EmbedderRecord(
        base_model=base,
        mined_on=mined_on,
        validated_on=validated_on,
        data=str(data.resolve()),
        split=split,
        corpus_sha256=file_sha256(data / "corpus.jsonl"),
        feedback=str(feedback.resolve()) if feedback else None,
        matryoshka_dims=tuple(dims),
        config={
            **asdict(config),
            "matryoshka_dims": list(dims),
            "serve_max_seq_length": serve_max_seq_length,
        },
        seconds={
            "ingest_base": round(ingest_s, 1),
            "mining": round(mined_s, 1),
            "training": round(train_s, 1),
            "validation": round(validate_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        counts={
            "train_queries": len(judgments.train),
            "validation_queries": len(judgments.validation),
            "groups": len(groups),
            "steps": int(result.global_step),
            "torch_threads": torch.get_num_threads(),
            **{f"{k}_queries": v for k, v in judgments.sources.items()},
        },
        validation=validation,
    )
    record.write(output)
    return record
