#!/bin/sh
# The README's main job: ingest the bundled demo corpus for tenant "demo" into the embedded default
# (local Qdrant on disk, no servers), serve the API, and print a curl line that works once it is ready.
set -eu
BIN=${BIN:-.venv/bin}
PORT=${RAG_PORT:-8000}
export RAG_COLLECTION=${RAG_COLLECTION:-demo}
export RAG_API_KEYS=${RAG_API_KEYS:-demo:demo-key-0123456789abcdef}
export RAG_ADMIN_TOKEN=${RAG_ADMIN_TOKEN:-demo-admin-0123456789abcdef}
export RAG_LOG_JSON=${RAG_LOG_JSON:-false}
KEY=${RAG_API_KEYS#*:}
KEY=${KEY%%,*}

"$BIN/rag" ingest data/demo --tenant demo --quiet >/dev/null
(
  until "$BIN/python" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/ready', timeout=1)" 2>/dev/null; do
    sleep 0.5
  done
  echo
  echo "ready on http://127.0.0.1:$PORT (API docs at /docs). Try:"
  echo "  curl -s http://127.0.0.1:$PORT/query -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\"
  echo "       -d '{\"query\": \"how do I run a shell command and capture its output\", \"top_k\": 3}'"
  echo "  curl -sN http://127.0.0.1:$PORT/query/stream -H 'Authorization: Bearer $KEY' -H 'Content-Type: application/json' \\"
  echo "       -d '{\"query\": \"parse a date string\"}'"
  echo
) &
exec "$BIN/rag" serve --port "$PORT"
