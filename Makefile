# buttress developer commands. Each target creates or reuses .venv by itself.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck unit test-all bench clean venv

$(STAMP): pyproject.toml requirements-dev.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[all]' -r requirements-dev.txt
	@touch $(STAMP)

venv: $(STAMP)

## The main job: run the bundled demo on embedded defaults (no services needed).
demo: $(STAMP)
	$(BIN)/python -m buttress lab demo --workers 2

## Lint, type check and the test suite.
test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS)

## The suite on every supported Python found on this machine (3.11, 3.12, 3.13).
test-all: $(STAMP)
	$(BIN)/nox -s tests

## Overhead benchmarks against peers (installed into .venv only, never package deps).
BENCH_STAMP := $(VENV)/.bench-installed
$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(BIN)/python -m pip install --quiet -r requirements-bench.txt
	@touch $(BENCH_STAMP)

bench: $(BENCH_STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache build dist
