# Two commands: `make run` serves on embedded defaults, `make test` runs the whole suite.
# Each creates .venv from pyproject.toml when needed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch (the `train` extra) lies in /opt/wheels on this project's machines; PyPI's is CUDA.
WHEELS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels)

.PHONY: run test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(WHEELS) -e '.[test,train]'
	touch $@ $(VENV)/.run-stamp

$(VENV)/.bench-stamp: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(WHEELS) -e '.[test,train,bench]'
	touch $@ $(VENV)/.test-stamp $(VENV)/.run-stamp

# `make run PORT=8081` serves on another port (also TRANSIENT_PORT=8081); `PORT=0` picks a free one.
run: $(VENV)/.run-stamp
	$(BIN)/python run.py $(if $(PORT),--port $(PORT))

# The suite runs a worker per core (pytest-xdist), a test file at a time on each: much of its time is spent
# waiting on servers, browsers and real-time streams, which the other worker fills.
test: $(VENV)/.test-stamp
	$(BIN)/ruff check server testkit train tests bench run.py
	$(BIN)/mypy
	$(BIN)/python -m pytest -n auto --dist loadfile

lint: $(VENV)/.test-stamp
	$(BIN)/ruff check server testkit train tests bench run.py
	$(BIN)/mypy

bench: $(VENV)/.bench-stamp
	$(BIN)/python bench/accuracy.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
