# The README's commands are targets here. Everything installs into .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# torch, pinned on its own: 2.13.0 is the CPU build on local disk (a plain `torch` pulls multi-GB CUDA wheels).
TORCH := torch==2.13.0

.PHONY: install lock demo test test-fast lint format bench-bm25 bench-quality peers-venv bench-peers clean

install: $(VENV)/.installed

# Everything but torch comes from requirements.lock: exact versions, each file checked against its sha256
# (--require-hashes), nothing resolved at install time (--no-deps). torch goes first, alone (its digest is
# machine-specific, see scripts/lock.sh); then the project itself, built with the locked setuptools.
# `pip check` fails the install if the lock misses something pyproject.toml asks for (run `make lock`).
# Re-runs whenever pyproject.toml or the lock changes.
$(VENV)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-deps $(TORCH)
	$(BIN)/pip install -q --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install -q --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	touch $@

# Re-resolve the lock from pyproject.toml (needs the network; ARGS="--upgrade" moves every pin).
lock:
	PYTHON=$(PYTHON) ./scripts/lock.sh $(ARGS)

# Main job: ingest the bundled demo corpus into the embedded default (local Qdrant on disk), serve /query,
# print a curl line that works. Ctrl-C stops it.
demo: install
	BIN=$(BIN) ./scripts/serve_demo.sh

test: install
	$(BIN)/python -m pytest

test-fast: install
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check rag api tests benchmarks monitoring
	$(BIN)/ruff format --check rag api tests benchmarks monitoring
	$(BIN)/mypy

format: install
	$(BIN)/ruff format rag api tests benchmarks monitoring
	$(BIN)/ruff check --fix rag api tests benchmarks monitoring

bench-bm25: install
	$(BIN)/python -m benchmarks.bm25_speed --data ../shared/data/scifact

bench-quality: install
	$(BIN)/python -m benchmarks.quality --data ../shared/data/scifact

# The peers (Haystack, LlamaIndex, qdrant-client + bm25s by hand) in their own venv: the service never
# depends on them. torch first and alone, as above.
PEERS_VENV := .venv-peers
peers-venv: $(PEERS_VENV)/.installed

$(PEERS_VENV)/.installed: benchmarks/peers/requirements.txt
	$(PYTHON) -m venv $(PEERS_VENV)
	$(PEERS_VENV)/bin/pip install -q $(TORCH)
	$(PEERS_VENV)/bin/pip install -q -r benchmarks/peers/requirements.txt
	touch $@

# Peers side by side (ARGS="--limit 20 --corpus-limit 500" for a quick run).
bench-peers: install peers-venv
	$(BIN)/python -m benchmarks.peers --data ../shared/data/scifact $(ARGS)

clean:
	rm -rf $(VENV) $(PEERS_VENV) .rag-data
