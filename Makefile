# The README's commands are targets here. Everything installs into .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast lint format bench-bm25 bench-quality clean

install: $(VENV)/.installed

# torch is installed first and pinned: 2.13.0 is the CPU build (a plain `torch` pulls multi-GB CUDA wheels).
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[dev,bench,onnx]"
	touch $@

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

clean:
	rm -rf $(VENV) .rag-data
