# The two commands a newcomer needs:  `make demo`  (the whole loop)  and  `make test`  (the test suite).
# Both install everything they need on first use (Python packages into .venv, Docker engine for tests).
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: demo test setup lint bench down clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml $(wildcard requirements/constraints*.txt) scripts/bootstrap.sh
	./scripts/bootstrap.sh $(VENV)
	@touch $@

demo: setup
	$(BIN)/modelops demo $(DEMO_ARGS)

test: setup
	./scripts/test.sh $(PYTEST_ARGS)

# ruff (lint + format) on everything, mypy on the code that ships (modelops/, flows/, tasks/).
lint: setup
	./scripts/lint.sh

bench: setup
	./scripts/install-bench-tools.sh
	$(BIN)/modelops bench

down:
	-$(BIN)/modelops down

# down --purge also deletes the PostgreSQL data a root run keeps under /var/lib/modelops for .modelops/.
clean:
	-$(BIN)/modelops down --purge
	rm -rf .modelops
