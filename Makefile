# Managed OS — the two commands that matter: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PG_VERSION ?= 15

.PHONY: install run test test-fast lint fmt bench pg-up clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole suite in one process on the embedded default (SQLite + in-process bus)
run: install
	$(BIN)/managed-os run

## test: lint, type checks, then every test (unit, integration on PostgreSQL + Tansu, e2e)
test: lint pg-up
	$(BIN)/python -m pytest -q -p no:cacheprovider

## test-fast: unit tests only
test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/unit

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services simulator tests bench

fmt: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install pg-up
	$(BIN)/python -m bench

## pg-up: start the machine's PostgreSQL cluster if it is not accepting connections
pg-up:
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $(PG_VERSION) main start || true

clean:
	rm -rf $(VENV) data .mypy_cache .ruff_cache .hypothesis
