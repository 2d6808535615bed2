# Two commands: `make run` starts the sandbox, `make test` installs what it needs and runs every test.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint unit integration contract schemathesis bench install clean

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

# The OpenAPI document against the served API (part of `integration`, so of `make test`).
schemathesis: $(STAMP)
	$(BIN)/pytest tests/integration/test_contract_schemathesis.py

test: lint
	$(BIN)/pytest tests/unit tests/integration contract_tests

bench: $(STAMP)
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
