# customer360: the README's two commands are `make demo` and `make test`.
# Both create or refresh .venv from requirements.lock first (a no-op when it is current).

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
STAMP  := $(VENV)/.installed
export C360_HOME ?= $(CURDIR)/data

.PHONY: demo test test-fast bench lock install clean-data airflow-ui docs help

help:
	@echo "make demo   - install, simulate sources, run the pipeline through Airflow, print the result"
	@echo "make test   - install and run the whole test suite"
	@echo "make bench  - benchmarks (never part of the tests)"

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@test -x $(UV) || $(BIN)/pip install --quiet --disable-pip-version-check uv==0.13.9
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(UV) pip sync --quiet requirements.lock
	VIRTUAL_ENV=$(CURDIR)/$(VENV) $(UV) pip install --quiet --no-deps -e .
	@touch $(STAMP)

install: $(STAMP)

# Re-resolve the pins after editing requirements.in.
lock:
	$(UV) pip compile requirements.in --python-version 3.11 -o requirements.lock

demo: $(STAMP)
	$(BIN)/c360 demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not chaos"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

airflow-ui: $(STAMP)
	$(BIN)/c360 airflow

clean-data:
	rm -rf data
