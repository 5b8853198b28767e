# The two commands (see README): `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOME_DIR ?= $(HOME)/.satchel

.PHONY: run install install-test system-deps test test-all lint bench clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

install: $(VENV)/bin/python
	$(PY) -m pip install -q -e '.[all]'

## make run: install satchel and start it on the embedded default (local disk + SQLite)
run: install
	$(VENV)/bin/satchel doctor
	$(VENV)/bin/satchel serve --home $(HOME_DIR)

system-deps:
	./scripts/system-deps.sh

install-test: $(VENV)/bin/python system-deps
	$(PY) -m pip install -q -e '.[test]'

lint: install-test
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

## make test: install everything the tests need and run the whole default suite
test: install-test lint
	$(VENV)/bin/pytest -q -m "not slow" -p no:cacheprovider

## make test-all: also the long soak/fuzz runs
test-all: install-test
	$(VENV)/bin/pytest -q -p no:cacheprovider

## make bench: the benchmarks side by side with their peers (results: bench/RESULTS.md)
bench: install-test
	$(PY) -m pip install -q -e '.[bench]'
	BENCH=1 ./scripts/system-deps.sh
	$(PY) -m bench all
	$(PY) -m bench.remote b1
	$(PY) -m bench.remote b2
	$(PY) -m bench.b6_kv
	$(PY) -m bench.b7_queue

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
