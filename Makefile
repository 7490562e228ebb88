# Managed OS — the two commands that matter: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PG_VERSION ?= 15

.PHONY: install run dev dev-down dev-fleet test test-fast lint fmt bench pg-up clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## run: the whole suite in one process on the embedded default (SQLite + in-process bus)
run: install
	$(BIN)/managed-os run

## dev: production-like local run: PostgreSQL, Tansu and the four services as separate
## processes (pids, logs and secrets under data/dev); returns once all four are ready
dev: install pg-up
	$(BIN)/python scripts/dev.py up

## dev-down: stop what `make dev` started (SIGTERM, SIGKILL after 40 s); databases are kept
dev-down:
	$(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON)) scripts/dev.py down

## dev-fleet: against `make dev`, 100 simulated Macs until compliance shows 100 % up to date
dev-fleet: install
	$(BIN)/python scripts/dev_fleet.py --devices 100

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
