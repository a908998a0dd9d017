# Fastbreak entry points. Every target installs what it needs first (see `setup`).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CDK := node_modules/.bin/cdk
ARGS ?=
# The suite runs on every core there is (pytest-xdist); a module stays on one worker, so that its
# moto server, local platform or Spark session is started once.
TEST_WORKERS ?= auto

# Node 20 is past its end of life for jsii: silence the banner it prints on every synth
# (the first name is the documented one, the second the one this jsii version reads).
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export PYTHONPATH := $(CURDIR):$(CURDIR)/lambdas

.PHONY: setup test synth bench demo schema-check lint clean

setup: $(STAMP) $(CDK) $(BIN)/fastbreak

# Re-install only when a requirements file changes.
$(STAMP): requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -r requirements-dev.txt
	# Put the repository and the Lambda asset root on the venv's path, so that
	# `.venv/bin/python -m fastbreak_producer` or `-m localplatform` work without PYTHONPATH.
	$(BIN)/python -c 'import site, sys; open(site.getsitepackages()[0] + "/fastbreak.pth", "w").write(sys.argv[1] + "\n" + sys.argv[1] + "/lambdas\n")' "$(CURDIR)"
	touch $(STAMP)

# The `fastbreak` command (fastbreak/cli): the venv's Python running `-m fastbreak`.
$(BIN)/fastbreak: $(STAMP)
	printf '#!/bin/sh\nexec "%s" -m fastbreak "$$@"\n' "$(CURDIR)/$(BIN)/python" > $@
	chmod +x $@

$(CDK): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(CDK)

test: setup
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile $(ARGS)

synth: setup
	$(CDK) synth --quiet $(ARGS)

bench: setup
	$(BIN)/python -m bench $(ARGS)

demo: setup
	$(BIN)/python -m localplatform demo $(ARGS)

schema-check: setup
	$(BIN)/python -m pytest -q tests/unit/test_schema_compatibility.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/mypy

clean:
	rm -rf cdk.out .pytest_cache .mypy_cache .ruff_cache
