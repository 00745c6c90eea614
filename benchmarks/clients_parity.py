"""The LangChain and LlamaIndex retrievers (rag.clients) return the documents ``POST /query`` returns, in its
order, for SciFact test queries against a live ``rag serve``.

The corpus is ingested once into ``--data-dir`` (reused when it already holds a published version) with
the configured embedder (default: the bundled MiniLM); the server runs with the cache off and a generous
deadline, so every call is computed afresh and none is degraded by load. Per query, four calls: a plain
``POST /query`` (httpx), the typed client, the LangChain retriever (``invoke``, then ``ainvoke``) and the
LlamaIndex retriever (``retrieve``, then ``aretrieve``); each list of (doc id, chunk id, score) is compared
with the plain call's. Also reported: this process's CPU time per call of each (the client side only).

The results hold counts only (SciFact is CC BY-NC: no text or ids leave the data folder).

    python -m benchmarks.clients_parity --data ../shared/data/scifact --data-dir /work/bench/clients/scifact
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from benchmarks._common import write_results
from rag.clients import AsyncRagClient, RagClient, Timeouts
from rag.clients.langchain import RagLangChainRetriever
from rag.clients.llamaindex import RagLlamaIndexRetriever
from rag.testing.servers import free_port, wait_for_port

KEY = "bench-clients-key-0123456789abcdef"
TENANT = "bench"
Row = tuple[str, str, float]


def env_for(data_dir: Path, collection: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")}
    env.update(
        RAG_DATA_DIR=str(data_dir),
        RAG_COLLECTION=collection,
        RAG_API_KEYS=f"{TENANT}:{KEY}",
        RAG_CACHE_ENABLED="false",  # every call computed afresh, not an L1 repeat of the first
        RAG_DEADLINE_MS="10000",  # nothing degraded by this machine's load
        RAG_RATE_LIMIT_QPS="0",
        RAG_LOG_LEVEL="WARNING",
        HF_HUB_OFFLINE="1",
    )
    if model := os.environ.get("RAG_EMBEDDER_MODEL"):
        env["RAG_EMBEDDER_MODEL"] = model
    return env


def ensure_ingested(data: Path, data_dir: Path, env: dict[str, str]) -> dict[str, Any]:
    """Ingest unless ``data_dir`` holds a published version; what the ingest took is kept beside it."""
    collection = env["RAG_COLLECTION"]
    record = data_dir / f"{collection}-ingest.json"
    if (data_dir / "versions" / collection / "CURRENT").exists():
        earlier = json.loads(record.read_text()) if record.exists() else {}
        return {**earlier, "ingested": False}
    started, cpu0 = time.perf_counter(), _children_cpu()
    load = os.getloadavg()[0]
    subprocess.run(
        [sys.executable, "-m", "rag", "ingest", str(data), "--tenant", TENANT, "--quiet"], env=env, check=True
    )
    took = {
        "ingest_wall_s": round(time.perf_counter() - started, 1),
        "ingest_cpu_s": round(_children_cpu() - cpu0, 1),
        "ingest_load_average": [round(load, 1), round(os.getloadavg()[0], 1)],
    }
    record.write_text(json.dumps(took))
    return {**took, "ingested": True}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def serve(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "rag", "serve", "--host", "127.0.0.1", "--port", str(port)], env=env
    )
    url = f"http://127.0.0.1:{port}"
    wait_for_port(port, timeout_s=300)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("rag serve exited during start-up")
        status = httpx.get(f"{url}/ready", timeout=10).json()
        if status["ready"]:
            return process, url
        time.sleep(0.2)
    raise TimeoutError("rag serve did not become ready")


def test_queries(folder: Path, limit: int) -> list[str]:
    test_ids = {line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]}
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines() if line]
    return [q["text"] for q in queries if q["_id"] in test_ids][:limit]


def timed(cpu: dict[str, float], name: str, call: Callable[[], list[Row]]) -> list[Row]:
    started = time.process_time()
    rows = call()
    cpu[name] = cpu.get(name, 0.0) + time.process_time() - started
    return rows


def run(url: str, queries: list[str], top_k: int) -> dict[str, Any]:
    http = httpx.Client(timeout=30)
    client = RagClient(url, KEY, timeouts=Timeouts(read_s=30))
    langchain = RagLangChainRetriever(client=client, top_k=top_k)
    llamaindex = RagLlamaIndexRetriever(client, top_k=top_k)
    cpu: dict[str, float] = {}
    per_query: list[dict[str, Any]] = []
    degraded = 0

    def plain(text: str) -> list[Row]:
        nonlocal degraded
        body = http.post(
            f"{url}/query", json={"query": text, "top_k": top_k}, headers={"Authorization": f"Bearer {KEY}"}
        ).json()
        degraded += bool(body["degraded"])
        return [(r["doc_id"], r["chunk_id"], r["score"]) for r in body["results"]]

    async def async_rows(text: str) -> tuple[list[Row], list[Row]]:
        async with AsyncRagClient(url, KEY, timeouts=Timeouts(read_s=30)) as aclient:
            lc = RagLangChainRetriever(async_client=aclient, top_k=top_k)
            li = RagLlamaIndexRetriever(async_client=aclient, top_k=top_k)
            docs = await lc.ainvoke(text)
            nodes = await li.aretrieve(text)
        return (
            [(d.metadata["doc_id"], d.id, d.metadata["score"]) for d in docs],
            [(n.node.ref_doc_id, n.node.node_id, n.score) for n in nodes],
        )

    for i, text in enumerate(queries):
        want = timed(cpu, "httpx POST /query", lambda t=text: plain(t))
        got = {
            "typed client": timed(
                cpu,
                "typed client",
                lambda t=text: [
                    (r.doc_id, r.chunk_id, r.score) for r in client.query(t, top_k=top_k).results
                ],
            ),
            "langchain invoke": timed(
                cpu,
                "langchain invoke",
                lambda t=text: [
                    (d.metadata["doc_id"], d.id, d.metadata["score"]) for d in langchain.invoke(t)
                ],
            ),
            "llamaindex retrieve": timed(
                cpu,
                "llamaindex retrieve",
                lambda t=text: [(n.node.ref_doc_id, n.node.node_id, n.score) for n in llamaindex.retrieve(t)],
            ),
        }
        got["langchain ainvoke"], got["llamaindex aretrieve"] = asyncio.run(async_rows(text))
        per_query.append(
            {
                "query": i,
                "results": len(want),
                **{name: rows == want for name, rows in got.items()},
                **{
                    f"{name} (doc ids)": [r[0] for r in rows] == [r[0] for r in want]
                    for name, rows in got.items()
                },
            }
        )
    client.close()
    http.close()
    names = [
        "typed client",
        "langchain invoke",
        "langchain ainvoke",
        "llamaindex retrieve",
        "llamaindex aretrieve",
    ]
    return {
        "queries": len(queries),
        "top_k": top_k,
        "degraded_answers": degraded,
        "same_documents_in_order": {n: sum(q[f"{n} (doc ids)"] for q in per_query) for n in names},
        "same_chunks_and_scores": {n: sum(q[n] for q in per_query) for n in names},
        "client_cpu_ms_per_call": {n: round(1000 * s / len(queries), 2) for n, s in cpu.items()},
        "per_query": per_query,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)"
    )
    parser.add_argument("--data-dir", help="where the index is kept (default: a temporary folder)")
    parser.add_argument("--collection", default="scifact_clients")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--name", default="clients_parity")
    args = parser.parse_args()

    data = Path(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(args.data_dir) if args.data_dir else Path(tmp) / "data"
        env = env_for(data_dir, args.collection)
        ingest = ensure_ingested(data, data_dir, env)
        process, url = serve(env)
        try:
            ready = httpx.get(f"{url}/ready").json()
            load_before = os.getloadavg()[0]
            result = run(url, test_queries(data, args.queries), args.top_k)
            result["load_average"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
        finally:
            process.terminate()
            process.wait(timeout=30)
    result.update(ingest=ingest, embedder=ready["embedder"], index_version=ready["index_version"])
    names = list(result["same_documents_in_order"])
    rows = "\n".join(
        f"| {n} | {result['same_documents_in_order'][n]}/{result['queries']} "
        f"| {result['same_chunks_and_scores'][n]}/{result['queries']} |"
        for n in names
    )
    cpu = "\n".join(f"| {n} | {ms:.2f} |" for n, ms in result["client_cpu_ms_per_call"].items())
    ingest_line = (
        f"{'ingested for this run' if ingest['ingested'] else 'index of an earlier ingest'}: "
        f"{ingest['ingest_wall_s']} s wall, {ingest['ingest_cpu_s']} s CPU"
        if "ingest_wall_s" in ingest
        else "index of an earlier ingest"
    )
    load = ", ".join(f"{x:.1f}" for x in result["load_average"])
    markdown = f"""# Clients: LangChain and LlamaIndex retrievers vs `POST /query` (SciFact)

`python -m benchmarks.clients_parity --data <scifact>`: {result["queries"]} SciFact test queries (the first
with qrels), top_k {result["top_k"]}, against a live `rag serve` (embedder `{result["embedder"]}`, index
{result["index_version"]}, {ingest_line}); cache off and a 10 s deadline, so each call is computed afresh
({result["degraded_answers"]} degraded answers). Each list is compared with a plain `POST /query`'s.

| caller | same documents, same order | same chunk ids and scores |
|---|---|---|
{rows}

Client-side CPU per call (this process only, `time.process_time`; the server runs in its own process on the
same 2 cores, shared with other work: 1-minute load average {load} at the start and end of the calls):

| caller | CPU ms per call |
|---|---|
{cpu}
"""
    write_results(args.name, result, markdown)


if __name__ == "__main__":
    main()
