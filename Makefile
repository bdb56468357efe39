# dbosx — every target installs what it needs into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint types unit bench bench-compare chaos postgres clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

postgres:
	@bash scripts/ensure_postgres.sh

demo: $(STAMP)
	cd examples && rm -f quickstart.sqlite* && ../$(BIN)/python quickstart.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

types: $(STAMP)
	$(BIN)/mypy --strict src

test: $(STAMP) postgres lint types
	$(BIN)/python -m pytest -q -x -p no:cacheprovider -n 3 --dist loadscope tests

bench: $(STAMP) postgres
	$(BIN)/python benchmarks/run.py

bench-compare: $(STAMP) postgres
	bash benchmarks/install_reference.sh
	$(BIN)/python benchmarks/run.py --compare

chaos: $(STAMP) postgres
	DBOS_CHAOS_LONG=1 $(BIN)/python -m pytest -q tests/acceptance -k crash

clean:
	rm -rf $(VENV) .bench .pytest_cache
