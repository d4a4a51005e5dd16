# Two commands from a fresh clone: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: run test install install-test peers lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

## Start the node on embedded defaults (SQLite, embedded Redis, one worker) under ./var
run: install
	$(BIN)/ainode serve

## Install everything, make sure the peers are there, run lint and the whole suite
test: install-test peers
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

peers:
	bash tests/peers.sh

lint: install-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install-test peers
	$(BIN)/python tests/bench/receive.py

clean:
	rm -rf $(VENV) var .pytest_cache
