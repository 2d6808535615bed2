# Two commands: `make run` starts the sandbox, `make test` installs what it needs and runs every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration contract schemathesis bench drill install clean ops-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/ywtb sandbox

lint: $(STAMP)
	$(BIN)/ruff check gateway adapters schemas tests contract_tests bench
	$(BIN)/ruff format --check gateway adapters schemas tests contract_tests bench
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit

integration: $(STAMP)
	$(BIN)/pytest tests/integration

contract: $(STAMP)
	$(BIN)/pytest contract_tests

# The Prometheus alerts: valid rules, and their unit tests (promtool from Debian's prometheus).
ops-check:
	@./ops/install-tools.sh
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts.test.yml

# The OpenAPI document against the served API (part of `integration`, so of `make test`).
schemathesis: $(STAMP)
	$(BIN)/pytest tests/integration/test_contract_schemathesis.py

test: lint ops-check
	$(BIN)/pytest tests/unit tests/integration contract_tests

bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

drill: $(STAMP)
	$(BIN)/python -m tests.drill --duration 600
