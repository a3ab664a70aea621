# lorapod: `make run` serves the API on the embedded defaults; `make test` runs the whole suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch for tests and benchmarks; GPU images bring their own CUDA torch.
TORCH_SPEC ?= torch==2.13.0
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: install dev run migrate test lint bench clean

$(VENV)/.base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.dev: $(VENV)/.base
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(VENV)/.base  ## the server's own dependencies

dev: $(VENV)/.dev  ## plus test, benchmark and generation dependencies

migrate: install  ## apply database migrations (also done at server start-up)
	$(PY) -m app migrate

run: install  ## serve on $(HOST):$(PORT) with ./workspace and SQLite
	$(PY) -m app migrate
	$(PY) -m app serve --host $(HOST) --port $(PORT)

test: dev  ## the whole suite
	$(PY) -m pytest -q

lint: dev  ## ruff, the format check and the type check, as CI runs them
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: dev  ## every benchmark against its anchor: docs/benchmarks.md and README's table; fails on a missed goal
	$(PY) bench/suite.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
