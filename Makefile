# The two commands of the README: `make run` and `make test`. Both set themselves up.
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3
PORT ?= 8000

.PHONY: install run test test-faults lint format services migrate bench bench-micro clean

$(BIN)/.installed: requirements.txt requirements-dev.txt constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -r requirements-dev.txt -c constraints.txt
	@touch $@

install: $(BIN)/.installed

services:
	@bash scripts/ensure-services.sh
	@bash scripts/ensure-wrk.sh

# Local run: web + worker + beat from the Procfile on the embedded defaults (SQLite and a
# filesystem broker under instance/), in development mode (the app is its own Clerk-like issuer).
# Ctrl-C is how a local run ends: only honcho gets it (scripts/foreground.sh) and stops the
# three processes; make reports no error.
run: install
	@mkdir -p instance
	GATEWAY_ENV=development $(BIN)/flask --app wsgi db upgrade
	@echo "clerk-gateway: http://127.0.0.1:$(PORT)  (Ctrl-C stops web, worker and beat)"
	@echo "  other terminal: GATEWAY_ENV=development $(BIN)/flask --app wsgi --help"
	@GATEWAY_ENV=development PORT=$(PORT) PATH=$(CURDIR)/$(BIN):$$PATH \
		bash scripts/foreground.sh $(BIN)/honcho start -f Procfile web worker beat

test: install services
	$(BIN)/pytest $(PYTEST_ARGS)

# The fault suite of docs/reliability.md: the Procfile's processes on loopback with Redis stopped
# and frozen, PostgreSQL cut, workers SIGKILLed, Stripe failing, a guard hanging (a few minutes).
test-faults: install services
	$(BIN)/pytest -m faults tests/faults -s $(PYTEST_ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy gateway worker

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: install
	$(BIN)/flask --app wsgi db upgrade

# The side-by-side benchmark of bench/README.md: wrk against our web process, the peer
# (fastapi-clerk-auth on uvicorn) and the ceiling (bare Flask), interleaved rounds, one table.
# A few minutes; loopback only. BENCH_ARGS passes options (see `python -m bench --help`).
bench: install services
	$(BIN)/python -m bench $(BENCH_ARGS)

# In-process micro-benchmarks of single parts (token verification, guard client, audit hand-off).
bench-micro: install services
	$(BIN)/python bench/verify_tokens.py --seconds 3
	$(BIN)/python bench/guard_client.py --calls 2000
	$(BIN)/python bench/cors_overhead.py --rounds 15

clean:
	rm -rf $(VENV) instance .pytest_cache .ruff_cache .mypy_cache
